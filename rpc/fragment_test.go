package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc/internal/faultproxy"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// wireStats counts the boundaries wireSplitters found, over all of a
// test's connections and directions.
type wireStats struct {
	frames atomic.Int64 // frame headers
	parts  atomic.Int64 // call parts whose prefix was whole and valid
}

// wireSplitter is a faultproxy.Splitter that cuts one direction of a
// session at every boundary of its frames and of the call parts inside
// them: after the native preface, after each frame header, at each
// frame's end, and inside DATA payloads after a stream's leading type (or
// smux admission status), after each part's 5-byte prefix and at each
// part's end. It follows the wire as PROTOCOL.md describes it: native
// frames (9-byte header) or smux's (8-byte header), and the call parts of
// streams of type StreamType; a stream whose parts do not parse is passed
// on in whole frames. On native, a stream the other side opened carries
// no type this way: it is taken to be a call, as every stream in these
// tests is.
type wireSplitter struct {
	smux    bool
	stats   *wireStats
	skip    int    // bytes of the preface still to pass
	hdr     []byte // the frame header so far
	left    int    // payload bytes of the frame still to pass
	st      *partParser
	streams map[uint32]*partParser
}

func newWireSplitter(tr mux.Transport, stats *wireStats) faultproxy.Splitter {
	w := &wireSplitter{smux: tr == mux.Smux, stats: stats, streams: map[uint32]*partParser{}}
	if !w.smux {
		w.skip = 8
	}
	return w
}

func (w *wireSplitter) Next(p []byte) int {
	for i, b := range p {
		if w.feed(b) {
			return i + 1
		}
	}
	return len(p)
}

// feed takes the next byte and reports whether a boundary follows it.
func (w *wireSplitter) feed(b byte) bool {
	switch {
	case w.skip > 0:
		w.skip--
		return w.skip == 0
	case w.left > 0:
		w.left--
		part := w.st != nil && w.st.feed(b, w.stats)
		return part || w.left == 0
	}
	w.hdr = append(w.hdr, b)
	if w.smux && len(w.hdr) == 8 {
		w.smuxHeader()
	} else if !w.smux && len(w.hdr) == 9 {
		w.nativeHeader()
	} else {
		return false
	}
	w.hdr = w.hdr[:0]
	w.stats.frames.Add(1)
	return true
}

// nativeHeader takes a native frame header (PROTOCOL.md §2.1).
func (w *wireSplitter) nativeHeader() {
	h := w.hdr
	length, typ, flags := int(h[0])<<16|int(h[1])<<8|int(h[2]), h[3], h[4]
	id := binary.BigEndian.Uint32(h[5:]) & 0x7fffffff
	w.left, w.st = length, nil
	const data, open = 0x0, 0x2
	if typ != data {
		return
	}
	st := w.streams[id]
	switch {
	case flags&open != 0:
		st = &partParser{state: ppType}
	case st == nil:
		st = &partParser{state: ppPrefix}
	}
	w.streams[id], w.st = st, st
}

// smuxHeader takes a smux frame header: version, command, little-endian
// length and stream id.
func (w *wireSplitter) smuxHeader() {
	h := w.hdr
	cmd, length, sid := h[1], int(binary.LittleEndian.Uint16(h[2:])), binary.LittleEndian.Uint32(h[4:])
	w.left, w.st = length, nil
	const syn, psh = 0, 2
	switch cmd {
	case syn: // this direction's sender opens the stream: its data begins with the type
		w.streams[sid] = &partParser{state: ppType}
	case psh: // on a stream the other side opened, the admission status comes first
		st := w.streams[sid]
		if st == nil {
			st = &partParser{state: ppStatus}
			w.streams[sid] = st
		}
		w.st = st
	}
}

// partParser follows one stream's bytes in one direction.
type partParser struct {
	state  uint8
	typ    uint64
	shift  uint
	prefix [partPrefixLen]byte
	n      int
	left   uint32
}

const (
	ppType    = iota // the stream's type, a uvarint
	ppStatus         // a smux admission status byte
	ppPrefix         // a part's prefix
	ppPayload        // a part's payload
	ppOpaque         // not a call, or not parts: no boundaries
)

// feed takes the stream's next byte and reports whether a boundary
// follows it.
func (pp *partParser) feed(b byte, stats *wireStats) bool {
	switch pp.state {
	case ppType:
		pp.typ |= uint64(b&0x7f) << pp.shift
		pp.shift += 7
		if b >= 0x80 {
			return false
		}
		pp.state = ppOpaque
		if pp.typ == uint64(StreamType) {
			pp.state = ppPrefix
		}
		return true
	case ppStatus:
		pp.state = ppPrefix
		return true
	case ppPrefix:
		pp.prefix[pp.n] = b
		if pp.n++; pp.n < partPrefixLen {
			return false
		}
		pp.n = 0
		if kind := pp.prefix[0]; kind < partCallHeader || kind > partTrailer {
			pp.state = ppOpaque
			return false
		}
		stats.parts.Add(1)
		if pp.left = binary.BigEndian.Uint32(pp.prefix[1:]); pp.left > 0 {
			pp.state = ppPayload
		}
		return true
	case ppPayload:
		if pp.left--; pp.left == 0 {
			pp.state = ppPrefix
			return true
		}
	}
	return false
}

// chatty is test.Echo with metadata and several messages: each handler
// sets a response header {"h": name} and a trailer {"t": name}, and
// answers each request with name, the request and the caller's "k"
// metadata; the server-streaming handler answers its request three times,
// and the bidi one sends its header before any message.
type chatty struct{ name string }

func (c chatty) answer(ctx context.Context, in *wrapperspb.StringValue) *wrapperspb.StringValue {
	md, _ := metadata.FromIncomingContext(ctx)
	return wrapperspb.String(c.name + ":" + in.Value + "|" + strings.Join(md.Get("k"), ","))
}

func (c chatty) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if err := SetHeader(ctx, metadata.Pairs("h", c.name)); err != nil {
		return nil, err
	}
	if err := SetTrailer(ctx, metadata.Pairs("t", c.name)); err != nil {
		return nil, err
	}
	return c.answer(ctx, in), nil
}

func (c chatty) ServerStream(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
	if err := s.SetHeader(metadata.Pairs("h", c.name)); err != nil {
		return err
	}
	s.SetTrailer(metadata.Pairs("t", c.name))
	for range 3 {
		if err := s.Send(c.answer(s.Context(), in)); err != nil {
			return err
		}
	}
	return nil
}

func (c chatty) ClientStream(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	if err := s.SetHeader(metadata.Pairs("h", c.name)); err != nil {
		return err
	}
	s.SetTrailer(metadata.Pairs("t", c.name))
	var all []string
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(c.answer(s.Context(), wrapperspb.String(strings.Join(all, ","))))
		}
		if err != nil {
			return err
		}
		all = append(all, in.Value)
	}
}

func (c chatty) Bidi(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	if err := s.SendHeader(metadata.Pairs("h", c.name)); err != nil {
		return err
	}
	s.SetTrailer(metadata.Pairs("t", c.name))
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(c.answer(s.Context(), in)); err != nil {
			return err
		}
	}
}

// TestCallsSurviveFragmentedDelivery runs every kind of call, in both
// directions of a session, through a proxy that delivers the bytes of
// both ways in pieces, each written apart with a pause that lets the
// receiver read it alone (mostly): one byte at a time, cut at every frame
// and call-part boundary, or in random pieces of 1 to 7 and of 1 to 100
// bytes. Frames are at most 1 KiB, so the 3 KiB messages span several.
// Every call carries outgoing metadata and gets a response header and a
// trailer, and the streams carry several messages, empty and large ones
// among them: every call succeeds, with every message, header and trailer
// as sent. The splitting is checked to have applied (a piece per byte;
// the boundaries found).
func TestCallsSurviveFragmentedDelivery(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, split := range []struct {
			name string
			make func(*wireStats) func() faultproxy.Splitter
		}{
			{"oneByteAtATime", func(*wireStats) func() faultproxy.Splitter { return faultproxy.Every(1) }},
			{"frameAndPartBoundaries", func(s *wireStats) func() faultproxy.Splitter {
				return func() faultproxy.Splitter { return newWireSplitter(tr, s) }
			}},
			{"random1to7", func(*wireStats) func() faultproxy.Splitter { return faultproxy.Random(1, 7) }},
			{"random1to100", func(*wireStats) func() faultproxy.Splitter { return faultproxy.Random(2, 100) }},
		} {
			t.Run(split.name, func(t *testing.T) {
				ctx := testCtx(t, 60*time.Second)
				opt := MuxConfig(&mux.Config{Transport: tr, MaxFrameSize: 1 << 10})
				srv := NewServer(opt)
				srv.RegisterService(&echoDesc, chatty{"server"})
				callbacks := NewServer()
				callbacks.RegisterService(&echoDesc, chatty{"client"})
				px := proxyTo(t, serve(t, srv))
				var stats wireStats
				px.Split(faultproxy.Both, split.make(&stats), time.Microsecond)
				client := dial(t, px.Addr(), WithServices(callbacks), opt)
				start := time.Now()
				chattyCalls(t, ctx, client, "server")
				chattyCalls(t, ctx, onlyPeer(t, srv), "client")
				s := px.Stats(faultproxy.Both)
				t.Logf("%d bytes in %d pieces in %v", s.Bytes, s.Writes, time.Since(start))
				switch frames, parts := stats.frames.Load(), stats.parts.Load(); split.name {
				case "oneByteAtATime":
					if s.Writes != s.Bytes {
						t.Errorf("%d pieces for %d bytes", s.Writes, s.Bytes)
					}
				case "frameAndPartBoundaries":
					// Eight calls, each at least three parts each way, and
					// some 48 KiB of messages in frames of 1 KiB; a cut at
					// each.
					if parts < 48 || frames < 48 || s.Writes < frames+parts {
						t.Errorf("%d pieces for %d frame headers and %d parts found", s.Writes, frames, parts)
					}
					t.Logf("cut at %d frame headers and %d parts, and their ends", frames, parts)
				case "random1to7":
					if s.Writes < s.Bytes/7 {
						t.Errorf("%d pieces for %d bytes", s.Writes, s.Bytes)
					}
				case "random1to100":
					if s.Writes < s.Bytes/100 {
						t.Errorf("%d pieces for %d bytes", s.Writes, s.Bytes)
					}
				}
			})
		}
	})
}

// chattyCalls makes one call of each kind through cc to a chatty called
// name, with metadata and several requests, and checks every answer.
func chattyCalls(t *testing.T, ctx context.Context, cc ClientConnInterface, name string) {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, "k", "v1", "k", "v2")
	c := echoClient{cc}
	big := payload(7, 3<<10)
	requests := []string{"first", "", big, "last"}
	want := func(req string) string { return name + ":" + req + "|v1,v2" }
	wantMD := func(what string, got metadata.MD, key string) {
		t.Helper()
		if !reflect.DeepEqual(got, metadata.Pairs(key, name)) {
			t.Errorf("%s: got %v, want %v", what, got, metadata.Pairs(key, name))
		}
	}
	wantMsg := func(what string, got *wrapperspb.StringValue, err error, req string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got.Value != want(req) {
			t.Errorf("%s: got %d bytes %.40q, want %d bytes %.40q", what, len(got.Value), got.Value, len(want(req)), want(req))
		}
	}

	var header, trailer metadata.MD
	out, err := c.Unary(ctx, wrapperspb.String(big), Header(&header), Trailer(&trailer))
	wantMsg("unary", out, err, big)
	wantMD("unary header", header, "h")
	wantMD("unary trailer", trailer, "t")

	ss, err := c.ServerStream(ctx, wrapperspb.String(big))
	if err != nil {
		t.Fatalf("server stream: %v", err)
	}
	h, err := ss.Header()
	if err != nil {
		t.Fatalf("server stream header: %v", err)
	}
	wantMD("server stream header", h, "h")
	for i := range 3 {
		m, err := ss.Recv()
		wantMsg("server stream message "+string(rune('0'+i)), m, err, big)
	}
	if _, err := ss.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("server stream end: got %v, want io.EOF", err)
	}
	wantMD("server stream trailer", ss.Trailer(), "t")

	cs, err := c.ClientStream(ctx)
	if err != nil {
		t.Fatalf("client stream: %v", err)
	}
	for _, r := range requests {
		if err := cs.Send(wrapperspb.String(r)); err != nil {
			t.Fatalf("client stream send: %v", err)
		}
	}
	out, err = cs.CloseAndRecv()
	wantMsg("client stream", out, err, strings.Join(requests, ","))
	h, err = cs.Header()
	if err != nil {
		t.Fatalf("client stream header: %v", err)
	}
	wantMD("client stream header", h, "h")
	wantMD("client stream trailer", cs.Trailer(), "t")

	bs, err := c.Bidi(ctx)
	if err != nil {
		t.Fatalf("bidi: %v", err)
	}
	if h, err := bs.Header(); err != nil { // sent before any message
		t.Fatalf("bidi header: %v", err)
	} else {
		wantMD("bidi header", h, "h")
	}
	for _, r := range requests {
		if err := bs.Send(wrapperspb.String(r)); err != nil {
			t.Fatalf("bidi send: %v", err)
		}
		m, err := bs.Recv()
		wantMsg("bidi answer", m, err, r)
	}
	bs.CloseSend()
	if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: got %v, want io.EOF", err)
	}
	wantMD("bidi trailer", bs.Trailer(), "t")
}
