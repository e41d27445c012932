package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The decoders of the headers, trailers and metadata a peer sends, fuzzed
// against the specification. The oracle is PROTOCOL.md itself: the schema
// of section 14, compiled from the document and decoded by the protobuf
// library, says what a payload holds, and the rules of section 14 say
// which metadata is malformed. Each target checks that the package's
// decoder agrees with the oracle, rejects with errMalformed what it
// rejects, decodes back what the package's encoder makes of what it
// accepted, and allocates in proportion to its input.

// wireSchema compiles the schema of PROTOCOL.md sections 14 and 19, once. Its
// string fields become bytes fields, whose encoding is the same: a
// receiver takes them as bytes (section 14: it replaces the invalid UTF-8
// of a status message, and metadata keys are ASCII by rule), where the
// protobuf library would reject the whole message. Trailer.code becomes
// a uint64, so that the oracle sees the code as sent rather than
// truncated to 32 bits.
var wireSchema = sync.OnceValues(func() (protoreflect.FileDescriptor, error) {
	doc, err := os.ReadFile("../PROTOCOL.md")
	if err != nil {
		return nil, err
	}
	_, section, ok := strings.Cut(string(doc), "### 14.")
	if ok {
		_, section, ok = strings.Cut(section, "```proto\n")
	}
	src, _, found := strings.Cut(section, "```")
	if !ok || !found {
		return nil, errors.New("PROTOCOL.md section 14 has no proto block")
	}
	// Section 19's messages, which use section 14's Entry, join them.
	_, hello, ok := strings.Cut(string(doc), "### 19.")
	if ok {
		_, hello, ok = strings.Cut(hello, "```proto\n")
	}
	hello, _, found = strings.Cut(hello, "```")
	if !ok || !found {
		return nil, errors.New("PROTOCOL.md section 19 has no proto block")
	}
	src += hello
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := protocompile.Compiler{Resolver: &protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(map[string]string{"wire.proto": src}),
	}}
	files, err := c.Compile(ctx, "wire.proto")
	if err != nil {
		return nil, fmt.Errorf("compiling the schema of PROTOCOL.md section 14: %w", err)
	}
	fdp := protodesc.ToFileDescriptorProto(files[0])
	for _, m := range fdp.MessageType {
		for _, fld := range m.Field {
			switch fld.GetType() {
			case descriptorpb.FieldDescriptorProto_TYPE_STRING:
				fld.Type = descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum()
			case descriptorpb.FieldDescriptorProto_TYPE_UINT32:
				fld.Type = descriptorpb.FieldDescriptorProto_TYPE_UINT64.Enum()
			}
		}
	}
	return protodesc.NewFile(fdp, nil)
})

// specMessage decodes p as the message name of the schema.
func specMessage(t testing.TB, name protoreflect.Name, p []byte) (protoreflect.Message, error) {
	t.Helper()
	fd, err := wireSchema()
	if err != nil {
		t.Fatal(err)
	}
	md := fd.Messages().ByName(name)
	if md == nil {
		t.Fatalf("PROTOCOL.md sections 14 and 19 define no message %s", name)
	}
	m := dynamicpb.NewMessage(md)
	return m, proto.Unmarshal(p, m)
}

// get returns field name of m.
func get(m protoreflect.Message, name protoreflect.Name) protoreflect.Value {
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil {
		panic(fmt.Sprintf("PROTOCOL.md: %s has no field %s", m.Descriptor().Name(), name))
	}
	return m.Get(fd)
}

// specReservedKey is the list of reserved keys of PROTOCOL.md section 14.
func specReservedKey(k string) bool {
	return strings.HasPrefix(k, ":") || slices.Contains([]string{
		"content-type", "te", "grpc-encoding", "grpc-message", "grpc-message-type", "grpc-status", "grpc-timeout",
	}, k)
}

// specValidPair applies the rules of PROTOCOL.md section 14 to a metadata
// entry: a key non-empty and of 0-9 a-z - _ . ; a value of printable
// ASCII, unless its key ends in -bin.
func specValidPair(k, v string) bool {
	if k == "" || strings.Trim(k, "0123456789abcdefghijklmnopqrstuvwxyz-_.") != "" {
		return false
	}
	return strings.HasSuffix(k, "-bin") || !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e })
}

// specMetadata is the metadata the entries of a decoded message carry,
// by the rules of section 14, or ok=false when one breaks them. Reserved
// keys are ignored; no entry at all makes nil.
func specMetadata(entries protoreflect.List) (md metadata.MD, ok bool) {
	for i := range entries.Len() {
		e := entries.Get(i).Message()
		k, v := string(get(e, "key").Bytes()), string(get(e, "value").Bytes())
		if specReservedKey(k) {
			continue
		}
		if !specValidPair(k, v) {
			return nil, false
		}
		if md == nil {
			md = metadata.MD{}
		}
		md[k] = append(md[k], v)
	}
	return md, true
}

// beyondFieldNumbers reports whether message p, or one of its metadata
// entries (field entries, if not 0), has a field number over
// protowire.MaxValidNumber, which the protobuf library rejects, and the
// package's decoders skip as an unknown field: a leniency, and the one
// place where they may accept what the oracle refuses.
func beyondFieldNumbers(p []byte, entries protowire.Number) bool {
	for len(p) > 0 {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return false
		}
		if num > protowire.MaxValidNumber {
			return true
		}
		m := protowire.ConsumeFieldValue(num, typ, p[n:])
		if m < 0 {
			return false
		}
		if num == entries && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(p[n:])
			if beyondFieldNumbers(v, 0) {
				return true
			}
		}
		p = p[n+m:]
	}
	return false
}

// overEntryLimit reports whether a decoder's error is the bound on
// metadata entries, after failing the test if p does not hold more than
// maxMetadataEntries well-formed entry fields before any malformed one.
func overEntryLimit(t *testing.T, err error, p []byte, entries protowire.Number) bool {
	t.Helper()
	if !errors.Is(err, errTooManyEntries) {
		return false
	}
	n := 0
	for len(p) > 0 {
		num, typ, k := protowire.ConsumeTag(p)
		if k < 0 {
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, p[k:])
		if m < 0 {
			break
		}
		if num == entries && typ == protowire.BytesType {
			n++
		}
		p = p[k+m:]
	}
	if n <= maxMetadataEntries {
		t.Fatalf("refused as over %d metadata entries, with %d of them", maxMetadataEntries, n)
	}
	return true
}

// sameMD reports whether a and b hold the same values in the same order
// per key; nil and empty are the same.
func sameMD(a, b metadata.MD) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !slices.Equal(va, vb) {
			return false
		}
	}
	return true
}

// wantMalformed fails the test unless err is a clear errMalformed.
func wantMalformed(t *testing.T, err error, p []byte) {
	t.Helper()
	if !errors.Is(err, errMalformed) || !strings.HasPrefix(err.Error(), errMalformed.Error()+": ") {
		t.Fatalf("% x: got error %v, want errMalformed with a reason", p, err)
	}
}

// wantPart fails the test unless b is exactly one part of kind, and
// returns its payload.
func wantPart(t *testing.T, b []byte, kind byte) []byte {
	t.Helper()
	if len(b) < partPrefixLen || b[0] != kind || int(binary.BigEndian.Uint32(b[1:])) != len(b)-partPrefixLen {
		t.Fatalf("encoder made % x, not one part of kind %d", b, kind)
	}
	return b[partPrefixLen:]
}

// The allocation bound of the decoders: decoding n bytes may allocate
// decodeAllocPerByte*n + decodeAllocFixed. Metadata is the costly part:
// an entry of a short key of its own and an empty value, eight bytes on
// the wire, costs a slot of the metadata map and a []string, over 20
// bytes per byte at worst (TestDecodersAllocateInProportion logs the
// ratios).
const (
	decodeAllocPerByte = 32
	decodeAllocFixed   = 2 << 10
)

// checkAllocs fails the test if decode allocates more than the bound for
// n bytes: the fewest bytes over a few tries, so that a goroutine that
// allocates meanwhile does not fail the test, while a decoder that
// over-allocates does, each time. It reads the memory statistics, which
// costs tens of microseconds: fuzz targets call it for large inputs only.
func checkAllocs(t *testing.T, n int, what string, decode func()) {
	t.Helper()
	bound := uint64(decodeAllocPerByte*n + decodeAllocFixed)
	got := allocPerCall(decode)
	if got > bound {
		t.Fatalf("%s of %d bytes allocated %d bytes, over %d", what, n, got, bound)
	}
}

// allocPerCall is the fewest bytes one call of f allocated, over a few
// runs of a few calls.
func allocPerCall(f func()) uint64 {
	const runs, calls = 3, 4
	best := uint64(math.MaxUint64)
	for range runs {
		best = min(best, allocatedDuring(func() {
			for range calls {
				f()
			}
		})/calls)
	}
	return best
}

// largeInput is the size from which fuzz targets measure allocations.
const largeInput = 512

// entryBytes is one metadata entry: its key and value fields.
func entryBytes(k, v string) []byte {
	b := protowire.AppendTag(nil, fieldEntryKey, protowire.BytesType)
	b = protowire.AppendString(b, k)
	b = protowire.AppendTag(b, fieldEntryValue, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// FuzzCallHeader decodes arbitrary bytes as the payload of a CALL_HEADER.
// The decoder accepts exactly what PROTOCOL.md's CallHeader accepts with
// a method and with metadata by the rules of section 14 (save the field
// numbers over the protobuf limit, which it skips): the same method, the
// same timeout in whole microseconds, capped at maxTimeout, the same
// metadata with reserved keys left out. It rejects the rest with a clear
// errMalformed. What it accepts, appendCallHeader encodes back into one
// CALL_HEADER part that decodes to the same. Large inputs cost
// allocations in proportion to their size.
func FuzzCallHeader(f *testing.F) {
	f.Add(appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, "")[partPrefixLen:])
	f.Add(appendCallHeader(nil, "/test.Echo/Unary", time.Nanosecond, 0, nil, "")[partPrefixLen:])
	f.Add(appendCallHeader(nil, "/a.B/C", maxTimeout+time.Hour, 0, metadata.Pairs("k", "v", "k", "w", "x-bin", "\x00\xff"), "")[partPrefixLen:])
	f.Add(callHeaderWith("/a.B/C", "grpc-timeout", "1S", ":authority", "x", "te", "trailers", "ok", "yes")[partPrefixLen:])
	f.Add(callHeaderWith("/a.B/C", "Upper", "v")[partPrefixLen:])
	f.Add(callHeaderWith("/a.B/C", "k", "\x7f")[partPrefixLen:])
	f.Add(callHeaderWith("/a.B/C", "", "v")[partPrefixLen:])
	unknown := protowire.AppendTag(callHeaderWith("/a.B/C", "k", "v")[partPrefixLen:], 9, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 7)
	unknown = protowire.AppendTag(unknown, 10, protowire.StartGroupType)
	unknown = protowire.AppendTag(unknown, 10, protowire.EndGroupType)
	f.Add(unknown)
	f.Add(protowire.AppendTag(nil, fieldCallTimeout, protowire.VarintType)) // no method, and a truncated varint
	f.Add(appendCallHeader(nil, "/a.B/C", 0, mux.PriorityHigh, nil, "")[partPrefixLen:])
	f.Add(appendCallHeader(nil, "/a.B/C", 0, mux.Priority(-128), nil, "")[partPrefixLen:])
	wide := protowire.AppendTag(appendCallHeader(nil, "/a.B/C", 0, 0, nil, "")[partPrefixLen:], fieldCallPriority, protowire.VarintType)
	f.Add(protowire.AppendVarint(wide, 1<<40|4000)) // a sint32 of more than 32 bits, and beyond int8
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := parseCallHeader(p)
		if overEntryLimit(t, err, p, fieldCallMetadata) {
			return
		}
		spec, specErr := specMessage(t, "CallHeader", p)
		var wantMD metadata.MD
		wantOK := specErr == nil
		if wantOK {
			wantMD, wantOK = specMetadata(get(spec, "metadata").List())
			wantOK = wantOK && len(get(spec, "method").Bytes()) > 0
		}
		if err != nil {
			wantMalformed(t, err, p)
			if wantOK {
				t.Fatalf("% x: rejected with %v; the spec accepts it", p, err)
			}
			return
		}
		if !wantOK {
			if specErr != nil && beyondFieldNumbers(p, fieldCallMetadata) {
				return
			}
			t.Fatalf("% x: accepted as %+v; the spec rejects it (%v)", p, h, specErr)
		}
		timeout := time.Duration(min(get(spec, "timeout_micros").Uint(), uint64(maxTimeout/time.Microsecond))) * time.Microsecond
		prio := mux.Priority(min(max(get(spec, "priority").Int(), math.MinInt8), math.MaxInt8))
		if !bytes.Equal(h.method, get(spec, "method").Bytes()) || h.timeout != timeout || !sameMD(h.md, wantMD) || h.priority != prio {
			t.Fatalf("% x: decoded %q, %v, %v, priority %d; the spec says %q, %v, %v, %d", p, h.method, h.timeout, h.md, h.priority, get(spec, "method").Bytes(), timeout, wantMD, prio)
		}
		again, err := parseCallHeader(wantPart(t, appendCallHeader(nil, string(h.method), h.timeout, h.priority, h.md, ""), partCallHeader))
		if err != nil || !bytes.Equal(again.method, h.method) || again.timeout != h.timeout || !sameMD(again.md, h.md) || again.priority != h.priority {
			t.Fatalf("%q, %v, %v, %d encoded and decoded again: %q, %v, %v, %d, %v", h.method, h.timeout, h.md, h.priority, again.method, again.timeout, again.md, again.priority, err)
		}
		if len(p) >= largeInput {
			checkAllocs(t, len(p), "a call header", func() { parseCallHeader(p) })
		}
	})
}

// FuzzResponseHeader decodes arbitrary bytes as the payload of a
// RESPONSE_HEADER. The decoder accepts exactly what PROTOCOL.md's
// ResponseHeader accepts with metadata by the rules of section 14, with
// the same metadata, reserved keys left out, and never nil; it rejects
// the rest with a clear errMalformed. What it accepts,
// appendResponseHeader encodes back into one part that decodes to the
// same. Large inputs cost allocations in proportion to their size.
func FuzzResponseHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendResponseHeader(nil, metadata.Pairs("k", "v"), "")[partPrefixLen:])
	f.Add(appendResponseHeader(nil, metadata.Pairs("a", "1", "a", "2", "b-bin", "\x00\x01\xfe", "c.d_e-f", " ~"), "")[partPrefixLen:])
	f.Add(appendEntries(nil, fieldHeaderMetadata, "grpc-status", "0", ":status", "200", "content-type", "application/grpc"))
	f.Add(appendEntries(nil, fieldHeaderMetadata, "k", "line\nbreak"))
	f.Add(appendEntries(nil, fieldHeaderMetadata, "k\xff", "v"))
	f.Add(append(appendEntries(nil, fieldHeaderMetadata, "k", "v"), 0x0a, 0x05, 0x0a)) // an entry cut short
	f.Fuzz(func(t *testing.T, p []byte) {
		md, _, err := parseResponseHeader(p)
		if overEntryLimit(t, err, p, fieldHeaderMetadata) {
			return
		}
		spec, specErr := specMessage(t, "ResponseHeader", p)
		var wantMD metadata.MD
		wantOK := specErr == nil
		if wantOK {
			wantMD, wantOK = specMetadata(get(spec, "metadata").List())
		}
		if err != nil {
			wantMalformed(t, err, p)
			if wantOK {
				t.Fatalf("% x: rejected with %v; the spec accepts it", p, err)
			}
			return
		}
		if !wantOK {
			if specErr != nil && beyondFieldNumbers(p, fieldHeaderMetadata) {
				return
			}
			t.Fatalf("% x: accepted as %v; the spec rejects it (%v)", p, md, specErr)
		}
		if md == nil || !sameMD(md, wantMD) {
			t.Fatalf("% x: decoded %#v; the spec says %v", p, md, wantMD)
		}
		again, _, err := parseResponseHeader(wantPart(t, appendResponseHeader(nil, md, ""), partResponseHeader))
		if err != nil || !sameMD(again, md) {
			t.Fatalf("%v encoded and decoded again: %v, %v", md, again, err)
		}
		if len(p) >= largeInput {
			checkAllocs(t, len(p), "a response header", func() { parseResponseHeader(p) })
		}
	})
}

// anyDetail is a serialized google.protobuf.Any, a status detail.
func anyDetail(t testing.TB, m proto.Message) []byte {
	a, err := anypb.New(m)
	if err == nil {
		var b []byte
		if b, err = proto.Marshal(a); err == nil {
			return b
		}
	}
	t.Fatal(err)
	return nil
}

// FuzzTrailer decodes arbitrary bytes as the payload of a TRAILER. The
// decoder accepts exactly what PROTOCOL.md's Trailer accepts with a code
// that google.rpc.Status can carry (at most 2^31-1) and metadata by the
// rules of section 14, and rejects the rest with a clear errMalformed.
// It keeps the code, the message with invalid UTF-8 replaced, the first
// 64 details and the metadata. What it accepts, appendTrailer encodes
// back into one part that decodes to the same, and its status (err) has
// the code, the message and those details that are valid Any messages,
// or is nil for OK. Large inputs cost allocations in proportion to their
// size, however many details they hold.
func FuzzTrailer(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendTrailer(nil, &trailer{code: codes.NotFound, message: "no"})[partPrefixLen:])
	f.Add(appendTrailer(nil, &trailer{
		code:    codes.FailedPrecondition,
		message: "bad \xff utf-8",
		details: [][]byte{anyDetail(f, wrapperspb.String("why")), {0x0a, 0x01, 0xff}, {0xff}},
		md:      metadata.Pairs("t", "1", "t-bin", "\x00"),
	})[partPrefixLen:])
	many := appendTrailer(nil, &trailer{code: codes.Aborted, message: "many"})[partPrefixLen:]
	for range 2 * maxStatusDetails {
		many = protowire.AppendTag(many, fieldTrailerDetails, protowire.BytesType)
		many = protowire.AppendBytes(many, nil)
	}
	f.Add(many)
	f.Add(protowire.AppendVarint(protowire.AppendTag(nil, fieldTrailerCode, protowire.VarintType), math.MaxInt32))
	f.Add(protowire.AppendVarint(protowire.AppendTag(nil, fieldTrailerCode, protowire.VarintType), math.MaxUint64))
	f.Add(appendEntries(nil, fieldTrailerMetadata, "grpc-status", "13", "k", "\x00"))
	f.Fuzz(func(t *testing.T, p []byte) {
		tl, err := parseTrailer(p)
		if overEntryLimit(t, err, p, fieldTrailerMetadata) {
			return
		}
		spec, specErr := specMessage(t, "Trailer", p)
		var wantMD metadata.MD
		wantOK := specErr == nil
		if wantOK {
			wantMD, wantOK = specMetadata(get(spec, "metadata").List())
			wantOK = wantOK && get(spec, "code").Uint() <= math.MaxInt32
		}
		if err != nil {
			wantMalformed(t, err, p)
			if wantOK {
				t.Fatalf("% x: rejected with %v; the spec accepts it", p, err)
			}
			return
		}
		if !wantOK {
			if specErr != nil && beyondFieldNumbers(p, fieldTrailerMetadata) {
				return
			}
			t.Fatalf("% x: accepted as %+v; the spec rejects it (%v)", p, tl, specErr)
		}
		var wantDetails [][]byte
		list := get(spec, "details").List()
		for i := range min(list.Len(), maxStatusDetails) {
			wantDetails = append(wantDetails, list.Get(i).Bytes())
		}
		wantMsg := strings.ToValidUTF8(string(get(spec, "message").Bytes()), "\uFFFD")
		if uint64(tl.code) != get(spec, "code").Uint() || tl.message != wantMsg ||
			!slices.EqualFunc(tl.details, wantDetails, bytes.Equal) || !sameMD(tl.md, wantMD) {
			t.Fatalf("% x: decoded %+v; the spec says %d %q %q %v", p, tl, get(spec, "code").Uint(), wantMsg, wantDetails, wantMD)
		}
		checkTrailerStatus(t, &tl)
		again, err := parseTrailer(wantPart(t, appendTrailer(nil, &tl), partTrailer))
		if err != nil || again.code != tl.code || again.message != tl.message ||
			!slices.EqualFunc(again.details, tl.details, bytes.Equal) || !sameMD(again.md, tl.md) {
			t.Fatalf("%+v encoded and decoded again: %+v, %v", tl, again, err)
		}
		if len(p) >= largeInput {
			checkAllocs(t, len(p), "a trailer", func() {
				tl, _ := parseTrailer(p)
				tl.err()
			})
		}
	})
}

// checkTrailerStatus checks the status a decoded trailer gives its call:
// nil for OK, else its code and message, and its details, each checked
// against the protobuf library's decoding of google.protobuf.Any.
func checkTrailerStatus(t *testing.T, tl *trailer) {
	t.Helper()
	err := tl.err()
	if tl.code == codes.OK {
		if err != nil {
			t.Fatalf("trailer %+v with status OK made error %v", tl, err)
		}
		return
	}
	s, ok := status.FromError(err)
	if !ok || s.Code() != tl.code || s.Message() != tl.message {
		t.Fatalf("trailer %+v made error %v", tl, err)
	}
	var want []*anypb.Any
	for _, d := range tl.details {
		a, ok := parseAny(d)
		ref := new(anypb.Any)
		// Unknown fields of a detail are not kept: compare without them.
		switch refErr := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(d, ref); {
		case refErr == nil && (!ok || !proto.Equal(a, ref)):
			t.Fatalf("detail % x: decoded %v, %v; the protobuf library says %v", d, a, ok, ref)
		case refErr != nil && ok && !beyondFieldNumbers(d, 0):
			t.Fatalf("detail % x: accepted as %v; the protobuf library rejects it: %v", d, a, refErr)
		}
		if ok {
			want = append(want, a)
		}
	}
	if got := s.Proto().GetDetails(); !slices.EqualFunc(got, want, func(a, b *anypb.Any) bool { return proto.Equal(a, b) }) {
		t.Fatalf("trailer %+v: status details %v, want %v", tl, got, want)
	}
}

// FuzzMetadataEntry decodes arbitrary metadata entries: raw, followed,
// unless both are empty, by a key field and a value field. An entry the
// protobuf library cannot decode as PROTOCOL.md's Entry is malformed; one
// with a reserved key is dropped, whatever its value; one that breaks the
// rules of section 14 (an empty key, a key outside [0-9a-z-_.], a value
// not printable ASCII unless the key ends in -bin) is malformed; any
// other adds its value under its key, after those already there. The
// sender's checks agree: checkMetadata fails such a pair with Internal
// exactly when the receiver finds it malformed, and passes reserved
// keys, which appendMetadata leaves out. What is accepted encodes back
// to the same metadata.
func FuzzMetadataEntry(f *testing.F) {
	f.Add([]byte{}, "k", []byte("v"))
	f.Add([]byte{}, "x-bin", []byte{0, 0xff, '\n'})
	f.Add([]byte{}, "0-9_a.z", []byte(" !~"))
	f.Add([]byte{}, "grpc-status", []byte("\x00 any value"))
	f.Add([]byte{}, ":path", []byte("/x"))
	f.Add([]byte{}, "Key", []byte("v"))
	f.Add([]byte{}, "k", []byte("\x7f"))
	f.Add([]byte{}, "-bin", []byte("\x01"))
	f.Add([]byte{}, "", []byte("v"))
	f.Add(entryBytes("first", "1"), "second", []byte("2"))     // the last key and value win
	f.Add([]byte{0x18, 0x01, 0x25, 1, 2, 3, 4}, "k", []byte{}) // unknown fields
	f.Add([]byte{0x0a, 0x05, 'k'}, "", []byte{})               // a key cut short
	f.Fuzz(func(t *testing.T, raw []byte, key string, value []byte) {
		entry := raw
		if key != "" || len(value) > 0 {
			entry = append(slices.Clip(raw), entryBytes(key, string(value))...)
		}
		prior := metadata.MD{"k": {"before"}}
		md := metadata.Join(prior)
		entries := 0
		err := addEntry(&md, &entries, entry)
		spec, specErr := specMessage(t, "Entry", entry)
		if specErr != nil {
			if err == nil && beyondFieldNumbers(entry, 0) {
				return
			}
			if err == nil {
				t.Fatalf("% x: accepted as %v; the protobuf library rejects it: %v", entry, md, specErr)
			}
			wantMalformed(t, err, entry)
			return
		}
		k, v := string(get(spec, "key").Bytes()), string(get(spec, "value").Bytes())
		sent := checkMetadata(metadata.MD{k: {v}})
		switch {
		case specReservedKey(k):
			if err != nil || !sameMD(md, prior) {
				t.Fatalf("reserved key %q: got %v, %v; want it dropped", k, md, err)
			}
			if sent != nil || len(appendMetadata(nil, fieldHeaderMetadata, metadata.MD{k: {v}})) != 0 {
				t.Fatalf("reserved key %q: the sender does not leave it out (%v)", k, sent)
			}
		case !specValidPair(k, v):
			wantMalformed(t, err, entry)
			if !sameMD(md, prior) {
				t.Fatalf("%q: %q: a malformed entry changed the metadata to %v", k, v, md)
			}
			if status.Code(sent) != codes.Internal {
				t.Fatalf("%q: %q: the sender's check says %v, want Internal", k, v, sent)
			}
		default:
			want := metadata.Join(prior, metadata.MD{k: {v}})
			if err != nil || !sameMD(md, want) {
				t.Fatalf("%q: %q: got %v, %v; want %v", k, v, md, err, want)
			}
			if sent != nil {
				t.Fatalf("%q: %q: the sender refuses what a receiver accepts: %v", k, v, sent)
			}
			again, _, err := parseResponseHeader(appendMetadata(nil, fieldHeaderMetadata, metadata.MD{k: {v}}))
			if err != nil || !sameMD(again, metadata.MD{k: {v}}) {
				t.Fatalf("%q: %q encoded and decoded again: %v, %v", k, v, again, err)
			}
		}
	})
}

// repeatUntil appends gen(i), i = 0, 1, ..., to b until b holds n bytes
// or more.
func repeatUntil(b []byte, n int, gen func(b []byte, i int) []byte) []byte {
	for i := 0; len(b) < n; i++ {
		b = gen(b, i)
	}
	return b
}

// TestDecodersAllocateInProportion decodes the worst cases for the
// allocations of the header and trailer decoders, of 1, 4 and 64 KiB:
// the cheapest entries or fields that cost the receiver something, such
// as metadata entries of one key or of distinct keys with empty values,
// reserved keys, empty status details, repeated methods and messages.
// Each costs at most decodeAllocPerByte bytes per byte of input, plus a
// constant, as does each input of the decoders' seed corpora; the test
// logs the ratios it measured.
func TestDecodersAllocateInProportion(t *testing.T) {
	for _, size := range []int{1 << 10, 4 << 10, 64 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { checkDecoderAllocs(t, size) })
	}
	t.Run("seed corpora", func(t *testing.T) {
		decoders := map[string]func([]byte){
			"FuzzCallHeader":     func(p []byte) { parseCallHeader(p) },
			"FuzzResponseHeader": func(p []byte) { parseResponseHeader(p) },
			"FuzzTrailer": func(p []byte) {
				tl, _ := parseTrailer(p)
				tl.err()
			},
		}
		for target, decode := range decoders {
			files, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
			if err != nil {
				t.Fatal(err)
			}
			for _, file := range files {
				p := corpusBytes(t, target, file.Name())
				checkAllocs(t, len(p), target+"/"+file.Name(), func() { decode(p) })
			}
		}
	})
}

// checkDecoderAllocs measures crafted worst cases of size bytes; those of
// more than maxMetadataEntries entries are refused, and cost no more.
func checkDecoderAllocs(t *testing.T, size int) {
	entries := func(field protowire.Number, key func(i int) string) []byte {
		return repeatUntil(nil, size, func(b []byte, i int) []byte {
			return appendEntries(b, field, key(i), "")
		})
	}
	oneKey := func(int) string { return "k" }
	distinctKeys := func(i int) string { return fmt.Sprintf("%x", i) }
	reserved := func(int) string { return "te" }
	method := protowire.AppendString(protowire.AppendTag(nil, fieldCallMethod, protowire.BytesType), "/a.B/C")
	repeatedMethod := repeatUntil(nil, size, func(b []byte, _ int) []byte { return append(b, method...) })
	emptyDetails := repeatUntil(nil, size, func(b []byte, _ int) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, fieldTrailerDetails, protowire.BytesType), nil)
	})
	validDetails := repeatUntil(nil, size, func(b []byte, _ int) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, fieldTrailerDetails, protowire.BytesType), anyDetail(t, wrapperspb.String("x")))
	})
	messages := repeatUntil(nil, size, func(b []byte, _ int) []byte {
		return protowire.AppendString(protowire.AppendTag(b, fieldTrailerMessage, protowire.BytesType), "\xffbad")
	})
	code := protowire.AppendVarint(protowire.AppendTag(nil, fieldTrailerCode, protowire.VarintType), uint64(codes.Aborted))
	callHeader := func(p []byte) func() {
		return func() {
			if _, err := parseCallHeader(p); err != nil && !errors.Is(err, errTooManyEntries) {
				t.Fatal(err)
			}
		}
	}
	responseHeader := func(p []byte) func() {
		return func() {
			if _, _, err := parseResponseHeader(p); err != nil && !errors.Is(err, errTooManyEntries) {
				t.Fatal(err)
			}
		}
	}
	trailerStatus := func(p []byte) func() {
		return func() {
			tl, err := parseTrailer(p)
			if err != nil && !errors.Is(err, errTooManyEntries) {
				t.Fatal(err)
			}
			tl.err()
		}
	}
	for _, tc := range []struct {
		name   string
		p      []byte
		decode func([]byte) func()
	}{
		{"call header with entries of one key", append(slices.Clip(method), entries(fieldCallMetadata, oneKey)...), callHeader},
		{"call header with entries of distinct keys", append(slices.Clip(method), entries(fieldCallMetadata, distinctKeys)...), callHeader},
		{"call header with reserved keys", append(slices.Clip(method), entries(fieldCallMetadata, reserved)...), callHeader},
		{"call header with repeated methods", repeatedMethod, callHeader},
		{"response header with entries of one key", entries(fieldHeaderMetadata, oneKey), responseHeader},
		{"response header with entries of distinct keys", entries(fieldHeaderMetadata, distinctKeys), responseHeader},
		{"trailer with entries of distinct keys", entries(fieldTrailerMetadata, distinctKeys), trailerStatus},
		{"trailer with empty details", append(slices.Clip(code), emptyDetails...), trailerStatus},
		{"trailer with valid details", append(slices.Clip(code), validDetails...), trailerStatus},
		{"trailer with repeated invalid messages", append(slices.Clip(code), messages...), trailerStatus},
	} {
		got := allocPerCall(tc.decode(tc.p))
		t.Logf("%s: %d bytes allocated %d (%.2f per byte)", tc.name, len(tc.p), got, float64(got)/float64(len(tc.p)))
		if bound := uint64(decodeAllocPerByte*len(tc.p) + decodeAllocFixed); got > bound {
			t.Errorf("%s: %d bytes allocated %d, over %d", tc.name, len(tc.p), got, bound)
		}
	}
}
