package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// The call layer's wire format (PROTOCOL.md, part two). A call's stream
// carries parts, each a one-byte kind and a four-byte big-endian length in
// front of its payload. The caller sends a call header, messages and an
// end part; the callee answers with an optional response header, messages
// and a trailer. Headers and trailers are protobuf-encoded; the codec
// below writes and reads them by hand, so they cost no reflection.

// Part kinds.
const (
	partCallHeader     byte = 1
	partMessage        byte = 2
	partClientEnd      byte = 3
	partResponseHeader byte = 4
	partTrailer        byte = 5

	// partCompressed is the flag of a MESSAGE part whose payload is
	// compressed with its direction's compressor (PROTOCOL.md, section
	// 13): the part's kind is partMessage|partCompressed.
	partCompressed byte = 0x80
)

const partPrefixLen = 5

// defaultMaxHeaderListSize bounds the call headers, response headers and
// trailers a side accepts, unless MaxHeaderListSize says otherwise.
const defaultMaxHeaderListSize = 1 << 20

// maxStatusDetails bounds the details of a status: a trailer's further
// details are neither sent nor kept (PROTOCOL.md, section 14), so that a
// trailer of many tiny details cannot cost its receiver an allocation
// each.
const maxStatusDetails = 64

// maxMetadataEntries bounds the metadata entries of one call header,
// response header or trailer, whatever their size (PROTOCOL.md, section
// 14). MaxHeaderListSize bounds their bytes, but a mebibyte of one-letter
// keys is some 140 000 entries, which cost their receiver over 15 times
// their size in strings, slices and map entries, and as much again in
// garbage; 4096 entries cost a few hundred KiB.
const maxMetadataEntries = 4096

// errTooManyEntries is the status of a part with more metadata entries
// than maxMetadataEntries: the callee answers with it, the caller fails
// the call with it.
var errTooManyEntries = status.Error(codes.ResourceExhausted,
	fmt.Sprintf("received header or trailer with more than %d metadata entries", maxMetadataEntries))

// Reset codes a caller uses to abort a call: 0x100 plus the gRPC code.
const (
	resetCanceled         = 0x100 + uint32(codes.Canceled)
	resetDeadlineExceeded = 0x100 + uint32(codes.DeadlineExceeded)
)

// Field numbers of the header and trailer messages.
const (
	fieldCallMethod      = 1
	fieldCallTimeout     = 2
	fieldCallMetadata    = 3
	fieldCallPriority    = 4
	fieldCallCompression = 5

	fieldHeaderMetadata    = 1
	fieldHeaderCompression = 2

	fieldTrailerCode     = 1
	fieldTrailerMessage  = 2
	fieldTrailerDetails  = 3
	fieldTrailerMetadata = 4

	fieldEntryKey   = 1
	fieldEntryValue = 2
)

var errMalformed = errors.New("malformed part")

// beginPart appends a part prefix with a zero length; endPart fills it in.
func beginPart(b []byte, kind byte) ([]byte, int) {
	return append(b, kind, 0, 0, 0, 0), len(b)
}

func endPart(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start+1:], uint32(len(b)-start-partPrefixLen))
	return b
}

// appendEmptyPart appends a part without payload.
func appendEmptyPart(b []byte, kind byte) []byte {
	return append(b, kind, 0, 0, 0, 0)
}

// callHeader is a decoded call header. method aliases the part's payload.
type callHeader struct {
	method      []byte
	timeout     time.Duration // 0: none
	md          metadata.MD
	priority    mux.Priority
	compression []byte // the compressor of the caller's messages; empty: none
}

// appendCallHeader appends the call header part. The timeout goes out in
// whole microseconds, rounded up, so the callee's deadline is never
// earlier than the caller's.
// compression names the compressor of the caller's compressed messages,
// "" for none.
func appendCallHeader(b []byte, method string, timeout time.Duration, prio mux.Priority, md metadata.MD, compression string) []byte {
	b, start := beginPart(b, partCallHeader)
	b = protowire.AppendTag(b, fieldCallMethod, protowire.BytesType)
	b = protowire.AppendString(b, method)
	if timeout > 0 {
		b = protowire.AppendTag(b, fieldCallTimeout, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64((timeout+time.Microsecond-1)/time.Microsecond))
	}
	b = appendMetadata(b, fieldCallMetadata, md)
	if prio != mux.PriorityNormal {
		b = protowire.AppendTag(b, fieldCallPriority, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(prio)))
	}
	if compression != "" {
		b = protowire.AppendTag(b, fieldCallCompression, protowire.BytesType)
		b = protowire.AppendString(b, compression)
	}
	return endPart(b, start)
}

func parseCallHeader(p []byte) (callHeader, error) {
	var h callHeader
	entries := 0
	err := parseFields(p, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fieldCallMethod && typ == protowire.BytesType:
			h.method = v
		case num == fieldCallTimeout && typ == protowire.VarintType:
			if x > uint64(maxTimeout/time.Microsecond) {
				x = uint64(maxTimeout / time.Microsecond)
			}
			h.timeout = time.Duration(x) * time.Microsecond
		case num == fieldCallMetadata && typ == protowire.BytesType:
			return addEntry(&h.md, &entries, v)
		case num == fieldCallPriority && typ == protowire.VarintType:
			// A sint32 on the wire; the last one counts, clamped to
			// the range of mux.Priority.
			h.priority = mux.Priority(min(max(int64(int32(protowire.DecodeZigZag(x&0xFFFFFFFF))), math.MinInt8), math.MaxInt8))
		case num == fieldCallCompression && typ == protowire.BytesType:
			h.compression = v
		}
		return nil
	})
	if err == nil && len(h.method) == 0 {
		err = fmt.Errorf("%w: call header without a method", errMalformed)
	}
	return h, err
}

// maxTimeout caps timeouts from the wire, so that adding one to now cannot
// overflow.
const maxTimeout = 100 * 365 * 24 * time.Hour

// appendResponseHeader appends a response header part; compression names
// the compressor of the callee's compressed messages, "" for none.
func appendResponseHeader(b []byte, md metadata.MD, compression string) []byte {
	b, start := beginPart(b, partResponseHeader)
	b = appendMetadata(b, fieldHeaderMetadata, md)
	if compression != "" {
		b = protowire.AppendTag(b, fieldHeaderCompression, protowire.BytesType)
		b = protowire.AppendString(b, compression)
	}
	return endPart(b, start)
}

// parseResponseHeader decodes a response header: its metadata, never nil,
// and the name of the callee's compressor, "" for none.
func parseResponseHeader(p []byte) (metadata.MD, string, error) {
	md := metadata.MD{}
	entries := 0
	var compression string
	err := parseFields(p, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == fieldHeaderMetadata && typ == protowire.BytesType:
			return addEntry(&md, &entries, v)
		case num == fieldHeaderCompression && typ == protowire.BytesType:
			compression = string(v)
		}
		return nil
	})
	return md, compression, err
}

// trailer is a decoded trailer: the call's status and trailer metadata.
type trailer struct {
	code    codes.Code
	message string
	details [][]byte // each a serialized google.protobuf.Any; at most maxStatusDetails
	md      metadata.MD
}

func appendTrailer(b []byte, t *trailer) []byte {
	b, start := beginPart(b, partTrailer)
	if t.code != codes.OK {
		b = protowire.AppendTag(b, fieldTrailerCode, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(t.code))
	}
	if t.message != "" {
		b = protowire.AppendTag(b, fieldTrailerMessage, protowire.BytesType)
		b = protowire.AppendString(b, validUTF8(t.message))
	}
	for _, d := range t.details[:min(len(t.details), maxStatusDetails)] {
		b = protowire.AppendTag(b, fieldTrailerDetails, protowire.BytesType)
		b = protowire.AppendBytes(b, d)
	}
	b = appendMetadata(b, fieldTrailerMetadata, t.md)
	return endPart(b, start)
}

// parseTrailer decodes a trailer part. Its details alias p: use them
// before p is reused. Details past maxStatusDetails are skipped.
func parseTrailer(p []byte) (trailer, error) {
	var t trailer
	entries := 0
	var code uint64 // the last code field counts, as in protobuf
	err := parseFields(p, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fieldTrailerCode && typ == protowire.VarintType:
			code = x
		case num == fieldTrailerMessage && typ == protowire.BytesType:
			t.message = validUTF8(string(v))
		case num == fieldTrailerDetails && typ == protowire.BytesType:
			if len(t.details) < maxStatusDetails {
				t.details = append(t.details, v)
			}
		case num == fieldTrailerMetadata && typ == protowire.BytesType:
			return addEntry(&t.md, &entries, v)
		}
		return nil
	})
	// google.rpc.Status carries an int32: a larger code is malformed, as
	// gRPC-Go has a grpc-status beyond 2^31-1.
	if err == nil && code > math.MaxInt32 {
		err = fmt.Errorf("%w: status code %d", errMalformed, code)
	}
	t.code = codes.Code(code)
	return t, err
}

// validUTF8 replaces the invalid UTF-8 sequences of a status message, a
// protobuf string, with U+FFFD, as gRPC does.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// parseAny decodes a status detail, a serialized google.protobuf.Any,
// whose value aliases p. It is for status.FromProto, which copies what
// it is given: so the value is copied once, not twice.
func parseAny(p []byte) (*anypb.Any, bool) {
	a := new(anypb.Any)
	err := parseFields(p, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1: // type_url
			if !utf8.Valid(v) {
				return errMalformed
			}
			a.TypeUrl = string(v)
		case 2: // value
			a.Value = v
		}
		return nil
	})
	return a, err == nil
}

// appendMetadata appends one entry field per value of md, leaving out
// reserved keys (see reservedKey).
func appendMetadata(b []byte, field protowire.Number, md metadata.MD) []byte {
	for k, vs := range md {
		if reservedKey(k) {
			continue
		}
		for _, v := range vs {
			b = protowire.AppendTag(b, field, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(entrySize(k, v)))
			b = protowire.AppendTag(b, fieldEntryKey, protowire.BytesType)
			b = protowire.AppendString(b, k)
			b = protowire.AppendTag(b, fieldEntryValue, protowire.BytesType)
			b = protowire.AppendString(b, v)
		}
	}
	return b
}

// metadataLen returns the length of what appendMetadata appends for md.
func metadataLen(md metadata.MD) int {
	n := 0
	for k, vs := range md {
		if reservedKey(k) {
			continue
		}
		for _, v := range vs {
			e := entrySize(k, v)
			n += 1 + protowire.SizeVarint(uint64(e)) + e // fields 1 to 15 take a one-byte tag
		}
	}
	return n
}

// callHeaderLen returns at least the length of the call header part that
// appendCallHeader appends.
func callHeaderLen(method string, md metadata.MD, compression string) int {
	return partPrefixLen + 1 + protowire.SizeBytes(len(method)) + 1 + protowire.SizeVarint(math.MaxUint64) + metadataLen(md) +
		1 + protowire.SizeVarint(protowire.EncodeZigZag(math.MinInt8)) + // the priority
		1 + protowire.SizeBytes(len(compression))
}

func entrySize(k, v string) int {
	return 2 + protowire.SizeBytes(len(k)) + protowire.SizeBytes(len(v))
}

// addEntry decodes one metadata entry into *md, making the map on first
// use, and counts it in *entries. An entry with a reserved key is
// dropped; one that breaks the rules of keys and values (see checkPair) is
// malformed; one past maxMetadataEntries fails the part.
func addEntry(md *metadata.MD, entries *int, p []byte) error {
	if *entries++; *entries > maxMetadataEntries {
		return errTooManyEntries
	}
	var key, value []byte
	err := parseFields(p, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ == protowire.BytesType {
			switch num {
			case fieldEntryKey:
				key = v
			case fieldEntryValue:
				value = v
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	k, v := string(key), string(value)
	if reservedKey(k) {
		return nil
	}
	if err := checkPair(k, v); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	if *md == nil {
		*md = metadata.MD{}
	}
	(*md)[k] = append((*md)[k], v)
	return nil
}

// parseFields walks the fields of a protobuf message, giving each to f:
// its bytes for length-delimited fields, its value for varints. Other wire
// types are skipped.
func parseFields(p []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(p) > 0 {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(n))
		}
		p = p[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(p)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(p)
		default:
			n = protowire.ConsumeFieldValue(num, typ, p)
		}
		if n < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(n))
		}
		p = p[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// partReader reads the parts of a call's stream. The payload it returns is
// valid until the next call of next, and until release.
type partReader struct {
	st        *mux.Stream
	maxMsg    int
	maxHeader int // the limit of other parts; 0: defaultMaxHeaderListSize
	prefix    [partPrefixLen]byte
	box       *[]byte             // the pooled buffer payloads are read into
	decomp    encoding.Compressor // the compressor of compressed messages; nil: none expected
}

// release returns the reader's buffer to the pool.
func (r *partReader) release() {
	if r.box != nil {
		putBuf(r.box)
		r.box = nil
	}
}

// take returns the buffer the last payload was read into, which is now
// the caller's to put back in the pool; the next part is read into
// another.
func (r *partReader) take() *[]byte {
	bp := r.box
	r.box = nil
	return bp
}

// readFull reads exactly len(p) bytes: io.EOF if the stream ended before
// the first, io.ErrUnexpectedEOF if it ended after.
func (r *partReader) readFull(p []byte) error {
	for n := 0; n < len(p); {
		m, err := r.st.Read(p[n:])
		n += m
		if err != nil {
			if n == len(p) {
				return nil
			}
			if err == io.EOF && n > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// errTooLarge reports a part over the size limit; the payload was not read.
type errTooLarge struct {
	kind         byte
	size         uint32
	max          int
	decompressed bool // the size is what decompressing a message made of it, so far
}

func (e *errTooLarge) Error() string {
	if e.decompressed {
		return fmt.Sprintf("received message after decompression larger than max (at least %d vs. %d)", e.size, e.max)
	}
	if e.kind == partMessage {
		return fmt.Sprintf("received message larger than max (%d vs. %d)", e.size, e.max)
	}
	return fmt.Sprintf("received header or trailer larger than max (%d vs. %d)", e.size, e.max)
}

// next reads the next part. At the end of the stream it returns io.EOF.
func (r *partReader) next() (byte, []byte, error) {
	if err := r.readFull(r.prefix[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: stream ended inside a part prefix", errMalformed)
		}
		return 0, nil, err
	}
	kind, size := r.prefix[0], binary.BigEndian.Uint32(r.prefix[1:])
	limit := r.maxHeader
	if limit <= 0 {
		limit = defaultMaxHeaderListSize
	}
	if kind == partMessage || kind == partMessage|partCompressed {
		limit = r.maxMsg
	}
	if uint64(size) > uint64(limit) {
		return kind, nil, &errTooLarge{kind: kind, size: size, max: limit}
	}
	if kind == partClientEnd && size != 0 {
		return kind, nil, fmt.Errorf("%w: end part with a payload of %d bytes", errMalformed, size)
	}
	p, err := r.readPayload(int(size))
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: stream ended inside a part", errMalformed)
		}
		return kind, nil, err
	}
	if kind == partMessage|partCompressed {
		p, err = r.inflate(p)
		return partMessage, p, err
	}
	return kind, p, nil
}

// wireLen returns the length of the last part's payload as it came, its
// prefix's: a compressed message's compressed size.
func (r *partReader) wireLen() int { return int(binary.BigEndian.Uint32(r.prefix[1:])) }

// minPayloadGrowth is the least a payload buffer grows by.
const minPayloadGrowth = 4 << 10

// payloadGrowth returns how much a payload buffer of read bytes grows by,
// toward a payload of n: enough for the rest, but at most what has been
// read (or minPayloadGrowth); within that, up to the capacity of its size
// class, so that it goes back to the pool the next payload of its size
// takes from.
func payloadGrowth(read, n int) int {
	most := read + max(read, minPayloadGrowth)
	return min(classCap(min(n, most)), most) - read
}

// readPayload reads a payload of n bytes into the reader's buffer. Where
// the pool has a buffer of that size, the payload is read straight into
// it. Otherwise the buffer grows as the bytes arrive, each time by at most
// what has been read so far (or minPayloadGrowth): a length prefix costs
// its sender five bytes, and must not make this side allocate the size it
// announces.
func (r *partReader) readPayload(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if r.box == nil || cap(*r.box) < n {
		bp := pooledBuf(n)
		if bp == nil && (r.box == nil || cap(*r.box) < minPayloadGrowth) {
			// Growth starts at minPayloadGrowth, so that the buffer
			// doubles through whole size classes.
			bp = getBuf(min(n, minPayloadGrowth))
		}
		if bp != nil {
			if r.box != nil {
				putBuf(r.box)
			}
			r.box = bp
		}
	}
	p := (*r.box)[:0]
	for len(p) < n {
		if len(p) == cap(p) {
			r.box, p = growBuf(r.box, p, payloadGrowth(len(p), n))
		}
		end := min(n, cap(p))
		err := r.readFull(p[len(p):end])
		*r.box = p // keep what grew, for the next part and for release
		if err != nil {
			return nil, err
		}
		p = p[:end]
	}
	return p, nil
}
