package mux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// Fuzz targets that feed a running server session frames a peer sends,
// over an in-memory pipe, and check its reaction against PROTOCOL.md §2-§9:
// FuzzFrameReaction for one frame of each type, built from fuzzed fields,
// FuzzSessionGarbage for arbitrary bytes.

// halfPipe is one end of an in-memory connection made of two net.Pipes,
// one per direction, so that an end can finish sending alone, as TCP's
// CloseWrite does: the other end then reads io.EOF, and its writes still
// go through. (A net.Pipe closed fails both at once, and which of the
// two a session notices first is a race.)
type halfPipe struct {
	net.Conn          // reads come from here
	w        net.Conn // writes go here
}

func halfPipes() (halfPipe, halfPipe) {
	aIn, bOut := net.Pipe()
	bIn, aOut := net.Pipe()
	return halfPipe{aIn, aOut}, halfPipe{bIn, bOut}
}

func (c halfPipe) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c halfPipe) CloseWrite() error           { return c.w.Close() }

func (c halfPipe) Close() error {
	c.w.Close()
	return c.Conn.Close()
}

func (c halfPipe) SetDeadline(t time.Time) error {
	c.w.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c halfPipe) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// pipePeer is a hand-written native peer on the far end of an in-memory
// connection from a server session: it sends what the test says, and
// records every frame the session sends, parsed without the package's
// decoder.
type pipePeer struct {
	t    testing.TB
	conn halfPipe
	s    *Session

	pos int // the next frame until looks at

	mu     sync.Mutex
	frames []rawFrame
	ended  bool          // the session's side of the connection is closed
	more   chan struct{} // signalled when a frame arrives or the connection ends
	read   chan struct{} // closed when the recording goroutine exits
}

// newPipePeer starts a server session with cfg and completes its
// handshake, announcing announce.
func newPipePeer(t testing.TB, cfg *Config, announce settings) *pipePeer {
	conn, peer := halfPipes()
	res := make(chan sessionResult, 1)
	go func() {
		s, err := Server(conn, cfg)
		res <- sessionResult{s: s, err: err}
	}()
	p := &pipePeer{t: t, conn: peer, more: make(chan struct{}, 1), read: make(chan struct{})}
	go p.record()
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	p.conn.Write(appendSettings(appendPreface(nil), announce))
	r := <-res
	if r.err != nil {
		p.conn.Close()
		<-p.read
		t.Fatalf("handshake: %v", r.err)
	}
	p.s = r.s
	return p
}

// record reads the session's preface and SETTINGS, then its frames, until
// the connection ends.
func (p *pipePeer) record() {
	defer close(p.read)
	defer func() {
		p.mu.Lock()
		p.ended = true
		p.mu.Unlock()
		signal(p.more)
	}()
	if _, err := io.ReadFull(p.conn, make([]byte, ownHelloLen)); err != nil {
		return
	}
	for {
		var h [9]byte
		if _, err := io.ReadFull(p.conn, h[:]); err != nil {
			return
		}
		f := rawFrame{frameHeader: frameHeader{
			length:   uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]),
			typ:      frameType(h[3]),
			flags:    h[4],
			streamID: binary.BigEndian.Uint32(h[5:]),
		}}
		f.payload = make([]byte, f.length)
		if _, err := io.ReadFull(p.conn, f.payload); err != nil {
			return
		}
		p.mu.Lock()
		p.frames = append(p.frames, f)
		p.mu.Unlock()
		signal(p.more)
	}
}

// frame returns the i-th frame the session sent, waiting up to 5 seconds
// for it; false when the connection ended before it.
func (p *pipePeer) frame(i int) (rawFrame, bool) {
	p.t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		p.mu.Lock()
		n, ended := len(p.frames), p.ended
		var f rawFrame
		if i < n {
			f = p.frames[i]
		}
		p.mu.Unlock()
		switch {
		case i < n:
			return f, true
		case ended:
			return rawFrame{}, false
		}
		select {
		case <-p.more:
		case <-timer.C:
			p.t.Fatalf("the session sent neither frame %d nor closed the connection in 5s", i)
		}
	}
}

// until returns the frames the session sends, after those until looked
// at before, up to one that stop accepts, and whether that one came before
// the connection ended.
func (p *pipePeer) until(stop func(rawFrame) bool) ([]rawFrame, bool) {
	p.t.Helper()
	var before []rawFrame
	for ; ; p.pos++ {
		f, ok := p.frame(p.pos)
		if !ok {
			return before, false
		}
		if stop(f) {
			p.pos++
			return before, true
		}
		before = append(before, f)
	}
}

// send writes b, which the session reads as it goes: net.Pipe has no
// buffer. A session that has stopped reading makes it fail, which is no
// error here.
func (p *pipePeer) send(b ...[]byte) {
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	p.conn.Write(bytes.Join(b, nil))
}

// end ends what the peer sends, waits, boundedly, for the session to end
// and returns its error; then it closes the connection.
func (p *pipePeer) end() error {
	p.t.Helper()
	p.conn.CloseWrite()
	defer func() {
		p.s.Kill()
		p.conn.Close()
		<-p.read
	}()
	select {
	case <-p.s.Done():
		return p.s.Err()
	case <-time.After(5 * time.Second):
		p.t.Fatal("the session still runs 5s after its connection was closed")
		return nil
	}
}

func isAck(seq []byte) func(rawFrame) bool {
	return func(f rawFrame) bool {
		return f.typ == framePing && f.flags == flagAck && bytes.Equal(f.payload, seq)
	}
}

// The session FuzzFrameReaction runs: small limits, so that the fuzzer
// reaches them, and the settings its peer announces.
var (
	reactionConfig = &Config{MaxIncomingStreams: 4, StreamWindow: 1024, MaxFrameSize: 1024,
		KeepAliveInterval: -1, HandshakeTimeout: 5 * time.Second, CloseTimeout: time.Second}
	reactionPeer = settings{maxIncomingStreams: 10, initialWindow: 1 << 16, maxFrameSize: 1 << 14}
)

// reaction is what PROTOCOL.md says a server session does when, with the
// peer's stream 1 open and accepted (2 bytes "hi" received and unread) and
// its stream 3 finished and forgotten, it receives one more frame.
type reaction struct {
	protocolError bool        // §9.1: GOAWAY(PROTOCOL_ERROR, Last-Stream-ID 3), then the session ends with ErrProtocol
	sent          []rawFrame  // what the session sends in answer, if the session goes on
	stream1       []byte      // what stream 1 then reads, if it is not reset
	stream1End    bool        // and then io.EOF
	stream1Reset  *ResetError // the error stream 1 reads instead
	opened        *rawFrame   // a new stream: id, and its data after the type
	openedType    StreamType
	goAway        *GoAwayError // the session's error once the peer then closes the connection
}

// specReaction computes the reaction to a frame of type typ with flags,
// stream id and payload, from PROTOCOL.md §2-§9 alone.
func specReaction(typ, flags uint8, id uint32, payload []byte) reaction {
	const maxFrame, window, sendWindow = 1024, 1024 - 2, 1 << 16
	pe := reaction{protocolError: true}
	ok := reaction{stream1: []byte("hi")}
	n := len(payload)
	word := func() uint32 { return binary.BigEndian.Uint32(payload) }
	// §2.1 and §2.2: the header.
	if id>>31 != 0 || n > maxFrame || typ > 5 {
		return pe
	}
	switch typ {
	case 0: // DATA
		if id == 0 || flags&^0x3 != 0 {
			return pe
		}
	case 1, 2: // RESET, WINDOW_UPDATE
		if id == 0 || n != 4 || flags != 0 {
			return pe
		}
	case 3: // PING
		if id != 0 || n != 8 || flags&^0x1 != 0 {
			return pe
		}
	case 4: // GOAWAY
		if id != 0 || n < 8 || flags != 0 {
			return pe
		}
	case 5: // SETTINGS: after the handshake, a protocol error whatever it holds
		return pe
	}
	// §3.1, §3.4: which streams exist. The peer (the client) opened 1 and 3;
	// the server has opened none.
	known := id == 1
	forgotten := id == 3
	switch {
	case typ == 0 && flags&0x2 != 0: // OPEN, §2.3 and §3.3
		var t uint64
		k := 0
		for k < min(n, 5) {
			t |= uint64(payload[k]&0x7f) << (7 * k)
			k++
			if payload[k-1] < 0x80 {
				break
			}
		}
		if k == 0 || payload[k-1] >= 0x80 || t > 1<<32-1 || id%2 == 0 || id <= 3 {
			return pe
		}
		ok.opened = &rawFrame{frameHeader: frameHeader{streamID: id, flags: flags}, payload: payload[k:]}
		ok.openedType = StreamType(t)
		return ok
	case typ == 0 || typ == 1 || typ == 2:
		if forgotten {
			return ok // a late frame: ignored
		}
		if !known {
			return pe
		}
	}
	switch typ {
	case 0: // DATA on stream 1, §5: within the window or reset
		if n > window {
			ok.stream1 = nil
			ok.stream1Reset = &ResetError{Code: ResetFlowControl}
			ok.sent = []rawFrame{{frameHeader{length: 4, typ: frameReset, streamID: 1}, word32(ResetFlowControl)}}
			return ok
		}
		ok.stream1 = append(ok.stream1, payload...)
		ok.stream1End = flags&0x1 != 0
	case 1: // RESET of stream 1, §4.4: before the peer's END, unread data goes
		ok.stream1 = nil
		ok.stream1Reset = &ResetError{Code: word(), Remote: true}
	case 2: // WINDOW_UPDATE on stream 1, §2.5
		inc := word()
		if inc == 0 || inc > 1<<31-1 {
			return pe
		}
		if sendWindow+uint64(inc) > 1<<31-1 {
			ok.stream1 = nil
			ok.stream1Reset = &ResetError{Code: ResetFlowControl}
			ok.sent = []rawFrame{{frameHeader{length: 4, typ: frameReset, streamID: 1}, word32(ResetFlowControl)}}
		}
	case 3: // PING, §2.6
		if flags == 0 {
			ok.sent = []rawFrame{{frameHeader{length: 8, typ: framePing, flags: flagAck}, payload}}
		}
	case 4: // GOAWAY, §2.7 and §7
		ok.goAway = &GoAwayError{LastStreamID: word(), Code: binary.BigEndian.Uint32(payload[4:]), Debug: payload[8:], Remote: true}
	}
	return ok
}

func word32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// FuzzFrameReaction sends a running server session one frame of any type,
// flags, stream id and payload, after a setup that leaves the peer's
// stream 1 open and its stream 3 forgotten, and checks the session's whole
// reaction against specReaction: exactly the frames it answers with
// (none, a PING ACK, a RESET with FLOW_CONTROL) or a GOAWAY with
// PROTOCOL_ERROR and ErrProtocol; what stream 1 then reads, or the reset
// it reads instead; the stream an OPEN frame creates, with its type and
// data; the GoAway a GOAWAY frame records, decoded field for field; the
// number of streams; and that nothing is left running.
func FuzzFrameReaction(f *testing.F) {
	seed := func(b []byte) {
		f.Add(b[3], b[4], binary.BigEndian.Uint32(b[5:9]), b[9:])
	}
	for _, t := range []uint64{0, 2, 127, 128, 300, 1<<32 - 1} { // the uvarints of PROTOCOL.md's conventions
		seed(openFrame(5, StreamType(t), []byte("data"), t%2 == 0))
	}
	seed(dataFrame(1, []byte(" there"), true))
	seed(dataFrame(1, make([]byte, 1023), false))
	seed(dataFrame(3, []byte("late"), false))
	seed(resetFrame(1, 0x101))
	seed(windowFrame(1, 1<<31-1-1<<16))
	seed(windowFrame(1, 1<<31-1))
	seed(windowFrame(3, 0))
	seed(pingFrame(0x0102030405060708, false))
	seed(pingFrame(7, true))
	seed(appendGoAway(nil, &GoAwayError{LastStreamID: 0, Code: GoAwayNormal}))
	seed(appendGoAway(nil, &GoAwayError{LastStreamID: 1, Code: GoAwayProtocolError, Debug: []byte("bye")}))
	seed(appendSettings(nil, rawSettings))
	seed(windowFrame(3, 0))
	f.Fuzz(func(t *testing.T, typ, flags uint8, id uint32, payload []byte) {
		if len(payload) > 1<<14 { // beyond any limit: says nothing new
			return
		}
		base := runtime.NumGoroutine()
		defer noGoroutinesLeft(t, base)
		want := specReaction(typ, flags, id, payload)
		p := newPipePeer(t, reactionConfig, reactionPeer)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()

		// Setup: stream 1 open and accepted, stream 3 finished and forgotten.
		p.send(openFrame(1, TypeDefault, []byte("hi"), false), openFrame(3, TypeDefault, nil, true))
		st1, err := p.s.Accept(ctx)
		if err != nil {
			p.end()
			t.Fatal(err)
		}
		defer st1.Close()
		st3, err := p.s.Accept(ctx)
		if err != nil {
			p.end()
			t.Fatal(err)
		}
		// Read to the end first: the END travels in the OPEN frame, but
		// Accept may return the stream before the reader has taken it in,
		// and a Close before that resets the stream as well.
		st3.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(st3); err != nil || len(b) != 0 {
			p.end()
			t.Fatalf("stream 3 reads %q, %v", b, err)
		}
		st3.Close()
		if _, ok := p.until(func(f rawFrame) bool { return f.typ == frameData && f.streamID == 3 && f.flags&flagEnd != 0 }); !ok {
			p.end()
			t.Fatal("no END of stream 3")
		}

		// The frame, then a PING whose answer shows the frame was processed.
		probe := []byte("probe#01")
		if bytes.Equal(payload, probe) {
			probe = []byte("probe#02")
		}
		p.send(appendFrameHeader(nil, frameHeader{length: uint32(len(payload)), typ: frameType(typ), flags: flags, streamID: id}), payload,
			frame(framePing, 0, 0, probe))
		got, answered := p.until(isAck(probe))
		hdr := appendFrameHeader(nil, frameHeader{length: uint32(len(payload)), typ: frameType(typ), flags: flags, streamID: id})
		if want.protocolError {
			if answered || len(got) != 1 || got[0].typ != frameGoAway || len(got[0].payload) < 9 ||
				binary.BigEndian.Uint32(got[0].payload) != 3 || binary.BigEndian.Uint32(got[0].payload[4:]) != GoAwayProtocolError {
				p.end()
				t.Fatalf("frame % x % x: the session answered %v (went on: %v); want a GOAWAY(PROTOCOL_ERROR, last stream 3) with debug data, then the end",
					hdr, payload, got, answered)
			}
			if err := p.end(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("frame % x % x: the session ended with %v, want ErrProtocol", hdr, payload, err)
			}
			return
		}
		if !answered {
			err := p.end()
			t.Fatalf("frame % x % x: the session ended (%v) after sending %v", hdr, payload, err, got)
		}
		if !sameFrames(got, want.sent) {
			p.end()
			t.Fatalf("frame % x % x: the session answered %v, want %v", hdr, payload, got, want.sent)
		}

		// What the application sees. Once it has read half of a stream's
		// window, and the peer's direction is still open, the session
		// returns the credit (PROTOCOL.md §5, the Go implementation's
		// policy): that WINDOW_UPDATE is the next frame.
		credited := func(id uint32, read int, end bool) {
			if read < reactionConfig.StreamWindow/2 || end {
				return
			}
			f, ok := p.frame(p.pos)
			p.pos++
			if !ok || !sameFrames([]rawFrame{f}, []rawFrame{{frameHeader{length: 4, typ: frameWindowUpdate, streamID: id}, word32(uint32(read))}}) {
				p.end()
				t.Fatalf("frame % x % x: after stream %d's %d bytes were read, the session sent %v (%v), want a WINDOW_UPDATE for them", hdr, payload, id, read, f, ok)
			}
		}
		st1.SetReadDeadline(time.Now().Add(2 * time.Second))
		if want.stream1Reset != nil {
			_, err := st1.Read(make([]byte, 1))
			var re *ResetError
			if !errors.As(err, &re) || *re != *want.stream1Reset {
				p.end()
				t.Fatalf("frame % x % x: stream 1 reads %v, want %v", hdr, payload, err, want.stream1Reset)
			}
		} else {
			b := make([]byte, len(want.stream1))
			_, err := io.ReadFull(st1, b)
			if err == nil && want.stream1End {
				_, err = st1.Read(make([]byte, 1))
				if err == io.EOF {
					err = nil
				} else if err == nil {
					err = errors.New("more data after the END")
				}
			}
			if err != nil || !bytes.Equal(b, want.stream1) {
				p.end()
				t.Fatalf("frame % x % x: stream 1 reads %q, %v; want %q (end: %v)", hdr, payload, b, err, want.stream1, want.stream1End)
			}
			credited(1, len(b), want.stream1End)
		}
		wantStreams := 1
		if o := want.opened; o != nil {
			wantStreams++
			st, err := p.s.AcceptType(ctx, want.openedType)
			if err != nil || st.ID() != o.streamID {
				p.end()
				t.Fatalf("frame % x % x: accepting the new stream of type %d: %v, %v", hdr, payload, want.openedType, st, err)
			}
			defer st.Close()
			st.SetReadDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, len(o.payload))
			_, err = io.ReadFull(st, b)
			if err == nil && o.flags&flagEnd != 0 {
				if _, err = st.Read(make([]byte, 1)); err == io.EOF {
					err = nil
				}
			}
			if err != nil || !bytes.Equal(b, o.payload) {
				p.end()
				t.Fatalf("frame % x % x: the new stream reads %q, %v; want %q", hdr, payload, b, err, o.payload)
			}
			credited(o.streamID, len(b), o.flags&flagEnd != 0)
		}
		if n := p.s.NumStreams(); n != wantStreams {
			p.end()
			t.Fatalf("frame % x % x: the session counts %d streams, want %d", hdr, payload, n, wantStreams)
		}
		if want.goAway != nil {
			if _, err := p.s.Open(ctx); !errors.Is(err, ErrGoAway) || !IsRetrySafe(err) {
				p.end()
				t.Fatalf("frame % x % x: Open after the peer's GOAWAY: %v, want a retry-safe ErrGoAway", hdr, payload, err)
			}
		}
		err = p.end()
		var g *GoAwayError
		switch {
		case want.goAway != nil:
			if !errors.As(err, &g) || g.LastStreamID != want.goAway.LastStreamID || g.Code != want.goAway.Code ||
				!bytes.Equal(g.Debug, want.goAway.Debug) || !g.Remote {
				t.Fatalf("frame % x % x: the session ended with %#v, want the peer's GoAway %#v", hdr, payload, err, want.goAway)
			}
		case !errors.Is(err, io.EOF) || errors.Is(err, ErrProtocol):
			t.Fatalf("frame % x % x: the session ended with %v once the peer closed the connection, want io.EOF", hdr, payload, err)
		}
	})
}

// sameFrames compares frames by type, flags, stream and payload.
func sameFrames(a, b []rawFrame) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].typ != b[i].typ || a[i].flags != b[i].flags || a[i].streamID != b[i].streamID || !bytes.Equal(a[i].payload, b[i].payload) {
			return false
		}
	}
	return true
}

// splitsIntoFrames reports whether b is a whole number of frames by their
// Length fields alone, whatever the frames say.
func splitsIntoFrames(b []byte) bool {
	for len(b) > 0 {
		if len(b) < frameHeaderLen {
			return false
		}
		n := frameHeaderLen + (int(b[0])<<16 | int(b[1])<<8 | int(b[2]))
		if len(b) < n {
			return false
		}
		b = b[n:]
	}
	return true
}

// garbageConfig is the session FuzzSessionGarbage feeds.
var garbageConfig = &Config{MaxIncomingStreams: 4, StreamWindow: 1024, MaxFrameSize: 1024,
	KeepAliveInterval: -1, HandshakeTimeout: 5 * time.Second, CloseTimeout: time.Second}

// runGarbage feeds data to a server session with cfg after a valid handshake, whose
// application accepts and reads every stream of TypeDefault, and reports
// what happened: if data is a whole number of frames, a PING follows it,
// and the frames the session sent before answering it, or until it
// closed the connection; then the peer closes the connection, and the
// session's error.
func runGarbage(t testing.TB, cfg *Config, data []byte) (frames []rawFrame, answered bool, err error) {
	p := newPipePeer(t, cfg, reactionPeer)
	var app sync.WaitGroup
	app.Add(1)
	go func() {
		defer app.Done()
		for {
			st, err := p.s.Accept(context.Background())
			if err != nil {
				return
			}
			app.Add(1)
			go func() {
				defer app.Done()
				io.Copy(io.Discard, st)
			}()
		}
	}()
	defer app.Wait()
	if !splitsIntoFrames(data) {
		p.send(data)
		return nil, false, p.end()
	}
	probe := []byte("probe#01")
	for bytes.Contains(data, probe) {
		probe[7]++
	}
	p.send(data, frame(framePing, 0, 0, probe))
	frames, answered = p.until(isAck(probe))
	return frames, answered, p.end()
}

// FuzzSessionGarbage feeds a running server session arbitrary bytes. Its
// application accepts and reads every stream, and never writes. It proves
// PROTOCOL.md §9: input that ends in the middle of a frame ends the
// session with ErrProtocol; after input that is a whole number of frames,
// either the session answers a PING, having sent only what a receiver may
// send on its own (WINDOW_UPDATEs of 1 to 2^31-1 for the peer's streams,
// RESETs of the peer's streams with REFUSED or FLOW_CONTROL, PING ACKs),
// and ends, once the peer closes the connection, with io.EOF or the
// peer's GoAway; or it sends a GOAWAY with PROTOCOL_ERROR and debug data
// and ends with ErrProtocol. Nothing is left running.
func FuzzSessionGarbage(f *testing.F) {
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	f.Add([]byte{})
	f.Add(cat(openFrame(1, TypeDefault, []byte("hello"), true)))
	f.Add(cat(openFrame(1, TypeDefault, make([]byte, 1000), false), dataFrame(1, make([]byte, 100), false)))
	f.Add(cat(openFrame(1, 7, nil, false), openFrame(3, 7, nil, false), openFrame(5, 7, nil, false), openFrame(7, 7, nil, false),
		openFrame(9, 7, nil, false), openFrame(11, 7, nil, false), openFrame(13, 7, nil, false)))
	f.Add(cat(openFrame(1, TypeDefault, []byte("x"), false), windowFrame(1, maxWindow)))
	f.Add(cat(pingFrame(1, false), appendGoAway(nil, &GoAwayError{Code: GoAwayNormal, Debug: []byte("later")})))
	f.Add(cat(openFrame(1, TypeDefault, []byte("x"), false), resetFrame(1, ResetCancel), dataFrame(1, []byte("late"), true)))
	f.Add(appendFrameHeader(nil, frameHeader{length: 1000, typ: frameData, flags: flagOpen, streamID: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := runtime.NumGoroutine()
		defer noGoroutinesLeft(t, base)
		frames, answered, err := runGarbage(t, garbageConfig, data)
		if !splitsIntoFrames(data) {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("input % x ends in the middle of a frame: the session ended with %v, want ErrProtocol", data, err)
			}
			return
		}
		if !answered {
			// The GOAWAY need not be last: what the application queued while
			// it left (credit for data it read) may follow it.
			i := slices.IndexFunc(frames, func(f rawFrame) bool {
				return f.typ == frameGoAway && len(f.payload) > 8 && binary.BigEndian.Uint32(f.payload[4:]) == GoAwayProtocolError
			})
			if i < 0 {
				t.Fatalf("input % x: the session closed the connection, sending %v, but no GOAWAY(PROTOCOL_ERROR) with debug data", data, frames)
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("input % x: the session sent a GOAWAY(PROTOCOL_ERROR) but ended with %v", data, err)
			}
			frames = slices.Delete(frames, i, i+1)
		} else if g := (*GoAwayError)(nil); !errors.As(err, &g) && (!errors.Is(err, io.EOF) || errors.Is(err, ErrProtocol)) {
			t.Fatalf("input % x: the session answered the PING, then ended with %v when the peer closed the connection", data, err)
		}
		for _, f := range frames {
			ok := false
			switch f.typ {
			case frameWindowUpdate:
				inc := binary.BigEndian.Uint32(f.payload)
				ok = f.streamID%2 == 1 && inc >= 1 && inc <= maxWindow
			case frameReset:
				code := binary.BigEndian.Uint32(f.payload)
				ok = f.streamID%2 == 1 && (code == ResetRefused || code == ResetFlowControl)
			case framePing:
				ok = f.flags == flagAck
			}
			if !ok {
				t.Fatalf("input % x: the session sent %s flags %#x on stream %d, % x, of its own", data, f.typ, f.flags, f.streamID, f.payload)
			}
		}
	})
}

// TestSessionAllocationBoundedByInput feeds sessions the corpora of
// FuzzSessionGarbage and FuzzSessionInput, and inputs whose frame headers
// announce far more than follows them, up to 16 MiB of DATA to a session
// that accepts such frames: beyond the fixed cost of a session, what it
// allocates grows at most in proportion to the bytes that arrived, not to
// the lengths the headers claim.
func TestSessionAllocationBoundedByInput(t *testing.T) {
	big := &Config{MaxIncomingStreams: 4, StreamWindow: 1 << 24, MaxFrameSize: maxFramePayload,
		KeepAliveInterval: -1, HandshakeTimeout: 5 * time.Second, CloseTimeout: time.Second}
	claim := func(length uint32, flags uint8, id uint32, follow []byte) []byte {
		return append(appendFrameHeader(nil, frameHeader{length: length, typ: frameData, flags: flags, streamID: id}), follow...)
	}
	type input struct {
		name string
		cfg  *Config
		data []byte
	}
	inputs := []input{
		{"16 MiB DATA opening a stream, 1 byte of it sent", big, claim(maxFramePayload, flagOpen, 1, []byte{0})},
		{"16 MiB DATA opening a stream, 1 KiB of it sent", big, claim(maxFramePayload, flagOpen, 1, make([]byte, 1024))},
		{"16 MiB DATA on an open stream, 100 bytes of it sent", big,
			append(openFrame(1, TypeDefault, []byte("x"), false), claim(maxFramePayload, 0, 1, make([]byte, 100))...)},
		{"1 KiB DATA opening a stream, 1 byte of it sent", garbageConfig, claim(1024, flagOpen, 1, []byte{0})},
		{"16 KiB GOAWAY, 8 bytes of it sent", big, append(appendFrameHeader(nil, frameHeader{length: maxControlPayload, typ: frameGoAway}), make([]byte, 8)...)},
	}
	for _, target := range []string{"FuzzSessionGarbage", "FuzzSessionInput"} {
		for i, c := range fuzzCorpus(t, target) {
			inputs = append(inputs, input{fmt.Sprintf("%s corpus #%d", target, i), garbageConfig, c[0].([]byte)})
		}
	}
	measure := func(cfg *Config, data []byte) uint64 {
		return bytesAllocated(func() { runGarbage(t, cfg, data) })
	}
	fixed := map[*Config]uint64{}
	for _, cfg := range []*Config{garbageConfig, big} {
		measure(cfg, nil) // warm up
		fixed[cfg] = measure(cfg, nil)
		t.Logf("a session with MaxFrameSize %d and an empty input allocates %d bytes", cfg.MaxFrameSize, fixed[cfg])
	}
	const perByte, slack = 4, 2 * deliverAhead // a frame's bytes are buffered at most deliverAhead ahead of their arrival
	worst := 0.0
	for _, in := range inputs {
		got := measure(in.cfg, in.data)
		extra := int64(got) - int64(fixed[in.cfg])
		if extra > int64(perByte*len(in.data)+slack) {
			t.Errorf("%s: %d bytes of input cost %d bytes beyond a session's %d, more than %d per byte + %d",
				in.name, len(in.data), extra, fixed[in.cfg], perByte, slack)
		}
		if len(in.data) >= 1024 {
			worst = max(worst, float64(extra)/float64(len(in.data)))
		}
		t.Logf("%s: %d bytes in, %d allocated beyond the fixed cost", in.name, len(in.data), extra)
	}
	t.Logf("worst ratio for inputs of 1 KiB or more: %.1f bytes allocated per byte of input", worst)
}

// TestProtocolErrorOutlivesAFailedGoAway has a peer send a malformed frame
// after it stopped reading: the session's GOAWAY cannot be written, and
// still the session ends with ErrProtocol (PROTOCOL.md §9.1), not with the
// write's error, which came first 19 times in 20 before the fix (the input
// FuzzSessionGarbage found is in its corpus too).
func TestProtocolErrorOutlivesAFailedGoAway(t *testing.T) {
	for i := range 50 {
		p := newPipePeer(t, garbageConfig, reactionPeer)
		p.conn.Conn.Close() // the peer reads no more: the session's writes fail
		<-p.read
		p.send([]byte("0000000000")) // a DATA header claiming 3 MB
		select {
		case <-p.s.Done():
		case <-time.After(5 * time.Second):
			p.s.Kill()
			t.Fatal("the session still runs 5s after a malformed frame")
		}
		err := p.s.Err()
		p.s.Kill()
		p.conn.Close()
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("run %d: the session ended with %v, want ErrProtocol", i, err)
		}
	}
}
