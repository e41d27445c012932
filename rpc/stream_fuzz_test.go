package rpc

import (
	"context"
	"errors"
	"google.golang.org/grpc/status"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The part stream fuzzed whole, through real mux sessions: the reader of
// parts, a callee served by a real Server, and a real caller, each fed
// arbitrary bytes from the other side of a stream. The sessions are made
// once per fuzz run; each input gets a stream of its own. What each side
// must do is derived from PROTOCOL.md, sections 13 to 17, and checked
// exactly: which parts are read, which status a call ends with.

// specPart is a part as PROTOCOL.md section 13 cuts a byte stream.
type specPart struct {
	kind    byte
	payload []byte
}

// specEnd says how the parts of a byte stream end, for a receiver with
// given limits.
type specEnd int

const (
	endClean      specEnd = iota // at a part boundary: io.EOF
	endTooLarge                  // a part over its limit: RESOURCE_EXHAUSTED, its payload unread
	endInPrefix                  // the bytes end inside a prefix: malformed
	endEndPayload                // a CLIENT_END with a payload: malformed
	endInPayload                 // the bytes end inside a payload: malformed
)

// specSplit cuts wire into parts as section 13 says a receiver with
// limits maxMsg (MESSAGE) and maxHeader (the other kinds) reads them,
// up to the first it cannot take; kind and size are that part's, for
// endTooLarge, endEndPayload and endInPayload.
func specSplit(wire []byte, maxMsg, maxHeader int) (parts []specPart, end specEnd, kind byte, size uint32) {
	for {
		switch {
		case len(wire) == 0:
			return parts, endClean, 0, 0
		case len(wire) < 5:
			return parts, endInPrefix, 0, 0
		}
		kind, size = wire[0], uint32(wire[1])<<24|uint32(wire[2])<<16|uint32(wire[3])<<8|uint32(wire[4])
		limit := maxHeader
		if isMessage(kind) {
			limit = maxMsg
		}
		switch {
		case uint64(size) > uint64(limit):
			return parts, endTooLarge, kind, size
		case kind == partClientEnd && size != 0:
			return parts, endEndPayload, kind, size
		case uint64(len(wire)-5) < uint64(size):
			return parts, endInPayload, kind, size
		}
		parts = append(parts, specPart{kind, wire[5 : 5+size]})
		wire = wire[5+size:]
	}
}

// pipeSessions returns the two sessions of a net.Pipe, on the native
// transport, killed when the test ends.
func pipeSessions(t testing.TB) (client, server *mux.Session) {
	t.Helper()
	a, b := net.Pipe()
	type result struct {
		s   *mux.Session
		err error
	}
	res := make(chan result, 1)
	go func() {
		s, err := mux.Server(b, nil)
		res <- result{s, err}
	}()
	client, err := mux.Client(a, nil)
	r := <-res
	if err != nil || r.err != nil {
		if client != nil {
			client.Kill()
		}
		if r.s != nil {
			r.s.Kill()
		}
		t.Fatalf("sessions over a pipe: %v, %v", err, r.err)
	}
	t.Cleanup(func() {
		client.Kill()
		r.s.Kill()
	})
	return client, r.s
}

// FuzzPartStream writes arbitrary bytes on a real mux stream, in two
// writes cut where the input says, the second ending the stream, and
// reads them on the other side with a partReader whose limits the input
// also says. The reader returns exactly the parts section 13 cuts the
// bytes into, each of the kind and with the payload sent, and then:
// io.EOF at a part boundary; *errTooLarge with the part's kind, size and
// limit for a part over its limit; a clear errMalformed for a stream
// that ends inside a prefix or a payload, and for a CLIENT_END with a
// payload. Its buffer never grows ahead of the bytes that arrived: at
// most 3 times the larger of 4 KiB and the bytes of the largest payload
// that arrived, so a prefix that claims 4 GiB or the limit costs
// nothing until the bytes come.
func FuzzPartStream(f *testing.F) {
	hdr := appendCallHeader(nil, "/test.Echo/Unary", time.Second, 0, metadata.Pairs("k", "v"), "")
	msg, _ := appendMessage(nil, wrapperspb.String("hi"), 1<<20)
	end := appendEmptyPart(nil, partClientEnd)
	f.Add(rawParts(hdr, msg, end), uint16(7), uint16(1<<10), uint16(1<<10))
	f.Add(rawParts(appendResponseHeader(nil, metadata.Pairs("h", "1"), ""), msg, appendTrailer(nil, &trailer{code: codes.Aborted, message: "x"})), uint16(0), uint16(1<<10), uint16(0))
	f.Add(rawParts([]byte{partMessage, 0xff, 0xff, 0xff, 0xff}, []byte("0123456789")), uint16(3), uint16(0xffff), uint16(0xffff))    // 4 GiB claimed
	f.Add(rawParts([]byte{partCallHeader, 0x00, 0x00, 0xff, 0xff}, []byte("0123456789")), uint16(3), uint16(0xffff), uint16(0xffff)) // the limit claimed, 10 bytes sent
	f.Add(rawParts(hdr, []byte{partClientEnd, 0, 0, 0, 1, 0}), uint16(100), uint16(0), uint16(0))
	f.Add(rawParts(part(9, 1, 2, 3), part(partMessage, make([]byte, 5000)...), []byte{partTrailer, 0}), uint16(6), uint16(6000), uint16(8))
	client, server := pipeSessions(f)
	f.Fuzz(func(t *testing.T, wire []byte, cut, maxMsg, maxHeader uint16) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := client.OpenType(ctx, StreamType)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		at := int(cut) % (len(wire) + 1)
		wrote := async(func() error {
			if _, err := st.Write(wire[:at]); err != nil {
				return err
			}
			_, err := st.WriteLast(wire[at:])
			return err
		})
		peer, err := server.AcceptType(ctx, StreamType)
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		box := new([]byte) // a buffer of no capacity, to see the reader's growth
		r := partReader{st: peer, maxMsg: int(maxMsg), maxHeader: int(maxHeader), box: box}
		defer r.release()
		limit := int(maxHeader)
		if limit == 0 {
			limit = defaultMaxHeaderListSize
		}
		parts, end, kind, size := specSplit(wire, int(maxMsg), limit)
		arrived, consumed := 0, 0 // the most bytes of one payload that arrived; the bytes of the parts read
		for i := 0; ; i++ {
			gotKind, payload, err := r.next()
			if i < len(parts) {
				arrived = max(arrived, len(parts[i].payload))
			} else if end == endInPayload {
				arrived = max(arrived, len(wire)-consumed-partPrefixLen)
			}
			if cap(*box) > 3*max(arrived, minPayloadGrowth) {
				t.Fatalf("part %d: the reader's buffer grew to %d bytes, with at most %d bytes of a payload arrived", i, cap(*box), arrived)
			}
			if i == len(parts) {
				checkPartsEnd(t, err, end, kind, size, int(maxMsg), limit)
				break
			}
			if parts[i].kind == partMessage|partCompressed {
				// A compressed message on a reader that expects none
				// (section 13): INTERNAL, and the reading stops.
				if status.Code(err) != codes.Internal {
					t.Fatalf("part %d: a compressed message where none is expected: %v, want Internal", i, err)
				}
				break
			}
			if err != nil || gotKind != parts[i].kind || !slices.Equal(payload, parts[i].payload) {
				t.Fatalf("part %d: read kind %d, % x, %v; want kind %d, % x", i, gotKind, payload, err, parts[i].kind, parts[i].payload)
			}
			consumed += partPrefixLen + len(payload)
		}
		peer.Close()
		if err := await(t, wrote, 10*time.Second, "the writer"); err != nil && end == endClean {
			t.Fatalf("writing the parts: %v", err)
		}
	})
}

// checkPartsEnd checks the error of the read after the last part: the
// one section 13 says for how the parts end.
func checkPartsEnd(t *testing.T, err error, end specEnd, kind byte, size uint32, maxMsg, maxHeader int) {
	t.Helper()
	var tooLarge *errTooLarge
	switch end {
	case endClean:
		if err != io.EOF {
			t.Fatalf("after the last part: %v, want io.EOF", err)
		}
	case endTooLarge:
		limit := maxHeader
		if isMessage(kind) {
			limit = maxMsg
		}
		if !errors.As(err, &tooLarge) || tooLarge.kind != kind || tooLarge.size != size || tooLarge.max != limit {
			t.Fatalf("a part of kind %d and %d bytes over the limit %d: %v", kind, size, limit, err)
		}
	case endInPrefix, endEndPayload, endInPayload:
		if !errors.Is(err, errMalformed) || !strings.HasPrefix(err.Error(), errMalformed.Error()+": ") {
			t.Fatalf("parts ending %d (kind %d, %d bytes): %v, want errMalformed", end, kind, size, err)
		}
	}
}
