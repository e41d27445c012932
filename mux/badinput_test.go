package mux

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// rawPeer is a hand-written native peer over loopback TCP: it writes and
// reads frames itself, so a test can send what a correct peer never would
// and see exactly what the session answers.
type rawPeer struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	peer settings // what the session announced
}

// rawSettings are what a rawPeer announces.
var rawSettings = settings{maxIncomingStreams: 100, initialWindow: 1 << 20, maxFrameSize: 1 << 16}

// rawServerSession starts a server session with cfg and connects a rawPeer
// to it, which sends hello (a preface and settings unless nil) first.
// Without hello the caller does the handshake itself; the session is
// then returned through the channel.
func rawServerSession(t testing.TB, cfg *Config, hello []byte) (*rawPeer, <-chan sessionResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := <-accepted
	if c == nil {
		conn.Close()
		t.Fatal("accept failed")
	}
	res := make(chan sessionResult, 1)
	go func() {
		start := time.Now()
		s, err := Server(c, cfg)
		res <- sessionResult{s, err, time.Since(start)}
	}()
	p := &rawPeer{t: t, conn: conn, br: bufio.NewReader(conn)}
	if hello != nil {
		if _, err := conn.Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	// The caller gets the result; the cleanup waits for it too, so that
	// no session outlives the test.
	out := make(chan sessionResult, 1)
	kept := make(chan sessionResult, 1)
	go func() {
		r := <-res
		kept <- r
		out <- r
	}()
	t.Cleanup(func() {
		conn.Close() // ends a handshake still running
		if r := <-kept; r.s != nil {
			r.s.Kill()
		}
	})
	return p, out
}

type sessionResult struct {
	s   *Session
	err error
	d   time.Duration // how long the handshake took
}

// rawClientOf returns a server session and a rawPeer that completed the
// handshake with it.
func rawClientOf(t testing.TB, cfg *Config) (*rawPeer, *Session) {
	t.Helper()
	return rawClientWith(t, cfg, rawSettings)
}

// rawClientWith is rawClientOf with the raw peer announcing its settings.
func rawClientWith(t testing.TB, cfg *Config, announce settings) (*rawPeer, *Session) {
	t.Helper()
	p, res := rawServerSession(t, cfg, appendSettings(appendPreface(nil), announce))
	var r sessionResult
	select {
	case r = <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("handshake with the raw peer hangs")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	p.readHello()
	return p, r.s
}

// readHello reads the session's preface and settings.
func (p *rawPeer) readHello() {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	pre := make([]byte, prefaceLen)
	if _, err := io.ReadFull(p.br, pre); err != nil {
		p.t.Fatal(err)
	}
	if err := checkPreface(pre); err != nil {
		p.t.Fatal(err)
	}
	h, payload, err := p.readFrame()
	if err != nil || h.typ != frameSettings {
		p.t.Fatalf("want SETTINGS after the preface, got %v %v", h.typ, err)
	}
	if p.peer, err = parseSettings(payload); err != nil {
		p.t.Fatal(err)
	}
}

// readFrame reads the session's next frame, within 5 seconds.
func (p *rawPeer) readFrame() (frameHeader, []byte, error) {
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hb := make([]byte, frameHeaderLen)
	if _, err := io.ReadFull(p.br, hb); err != nil {
		return frameHeader{}, nil, err
	}
	h, err := parseFrameHeader(hb, maxFramePayload)
	if err != nil {
		return h, nil, err
	}
	payload := make([]byte, h.length)
	if _, err := io.ReadFull(p.br, payload); err != nil {
		return h, nil, err
	}
	return h, payload, nil
}

// until reads frames until match accepts one, failing the test if the
// connection ends first or a frame is malformed.
func (p *rawPeer) until(what string, match func(frameHeader, []byte) bool) (frameHeader, []byte) {
	p.t.Helper()
	for {
		h, payload, err := p.readFrame()
		if err != nil {
			p.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(h, payload) {
			return h, payload
		}
	}
}

// goAway reads frames until a GOAWAY and returns its code.
func (p *rawPeer) goAway() (code, lastID uint32, debug string) {
	p.t.Helper()
	_, payload := p.until("GOAWAY", func(h frameHeader, _ []byte) bool { return h.typ == frameGoAway })
	return binary.BigEndian.Uint32(payload[4:]), binary.BigEndian.Uint32(payload), string(payload[8:])
}

func (p *rawPeer) send(b ...[]byte) {
	p.t.Helper()
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.conn.Write(bytes.Join(b, nil)); err != nil {
		p.t.Fatal(err)
	}
}

// rawFrame is a frame a rawPeer read.
type rawFrame struct {
	frameHeader
	payload []byte
}

// pingPong checks that the session answers a ping, after everything sent
// before it has been processed. It returns the frames read before the
// answer.
func (p *rawPeer) pingPong(seq uint64) []rawFrame {
	p.t.Helper()
	p.send(pingFrame(seq, false))
	var before []rawFrame
	p.until("PING ack", func(h frameHeader, payload []byte) bool {
		if h.typ == framePing && h.flags == flagAck && binary.BigEndian.Uint64(payload) == seq {
			return true
		}
		before = append(before, rawFrame{h, payload})
		return false
	})
	return before
}

// frame encodes one frame.
func frame(typ frameType, flags uint8, id uint32, payload []byte) []byte {
	b := appendFrameHeader(nil, frameHeader{length: uint32(len(payload)), typ: typ, flags: flags, streamID: id})
	return append(b, payload...)
}

// openFrame opens stream id of type typ with data, ending it if end.
func openFrame(id uint32, typ StreamType, data []byte, end bool) []byte {
	flags := flagOpen
	if end {
		flags |= flagEnd
	}
	return frame(frameData, flags, id, append(binary.AppendUvarint(nil, uint64(typ)), data...))
}

func dataFrame(id uint32, data []byte, end bool) []byte {
	var flags uint8
	if end {
		flags = flagEnd
	}
	return frame(frameData, flags, id, data)
}

func word(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func windowFrame(id, inc uint32) []byte { return frame(frameWindowUpdate, 0, id, word(inc)) }

func resetFrame(id, code uint32) []byte { return frame(frameReset, 0, id, word(code)) }

func pingFrame(seq uint64, ack bool) []byte {
	var flags uint8
	if ack {
		flags = flagAck
	}
	return frame(framePing, flags, 0, binary.BigEndian.AppendUint64(nil, seq))
}

// healthyPair returns a session pair whose echo works; tests that break
// other sessions check it afterwards.
func healthyPair(t *testing.T) func(*testing.T) {
	c, s := pair(t, nil, nil)
	serveEcho(t, s)
	return func(t *testing.T) {
		t.Helper()
		if err := echo(testCtx(t, 5*time.Second), c, []byte("still fine")); err != nil {
			t.Fatalf("another session was disturbed: %v", err)
		}
	}
}

// waitDone waits, boundedly, for a session to end and returns its error.
func waitDone(t testing.TB, s *Session, within time.Duration) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(within):
		t.Fatalf("session still running after %v", within)
		return nil
	}
}

// TestHandshakeBadInput feeds a server session wrong first bytes.
func TestHandshakeBadInput(t *testing.T) {
	const hsTimeout = 300 * time.Millisecond
	cfg := &Config{HandshakeTimeout: hsTimeout}
	cases := []struct {
		name  string
		hello []byte
		close bool // close the connection after hello
		want  error
		waits bool // the handshake ends after HandshakeTimeout
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"), false, ErrNotMuxrpc, false},
		{"short garbage, then silence", []byte("GET"), false, ErrNotMuxrpc, true},
		{"short garbage, then close", []byte("xyz"), true, ErrNotMuxrpc, false},
		{"reserved preface byte set", []byte("MUXRPC\x01\x01"), false, ErrNotMuxrpc, false},
		{"wrong version", []byte("MUXRPC\x00\x02"), false, ErrVersion, false},
		{"version zero", []byte("MUXRPC\x00\x00"), false, ErrVersion, false},
		{"silent peer", nil, false, os.ErrDeadlineExceeded, true},
		{"half a preface, then silence", []byte("MUXR"), false, os.ErrDeadlineExceeded, true},
		{"preface, then silence", appendPreface(nil), false, os.ErrDeadlineExceeded, true},
		{"preface, then close", appendPreface(nil), true, io.EOF, false},
		{"PING instead of SETTINGS", append(appendPreface(nil), pingFrame(1, false)...), false, ErrProtocol, false},
		{"SETTINGS with a tiny frame size", append(appendPreface(nil),
			frame(frameSettings, 0, 0, appendSetting(nil, settingMaxFrameSize, 100))...), false, ErrProtocol, false},
		{"SETTINGS with a window over 2^31-1", append(appendPreface(nil),
			frame(frameSettings, 0, 0, appendSetting(nil, settingInitialWindow, 1<<31))...), false, ErrProtocol, false},
		{"SETTINGS on a stream", append(appendPreface(nil), frame(frameSettings, 0, 1, nil)...), false, ErrProtocol, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, res := rawServerSession(t, cfg, tc.hello)
			if tc.close {
				// Half-close: a full close with the session's hello unread
				// would reset the connection instead of ending it.
				p.conn.(*net.TCPConn).CloseWrite()
			}
			var r sessionResult
			select {
			case r = <-res:
			case <-time.After(5 * time.Second):
				t.Fatal("Server did not return")
			}
			if r.err == nil {
				t.Fatal("Server accepted the peer")
			}
			if !errors.Is(r.err, tc.want) {
				t.Fatalf("got %v, want %v", r.err, tc.want)
			}
			if tc.want == os.ErrDeadlineExceeded {
				var ne net.Error
				if !errors.As(r.err, &ne) || !ne.Timeout() {
					t.Errorf("%v is not a net.Error timeout", r.err)
				}
			}
			if tc.waits {
				if r.d < hsTimeout-50*time.Millisecond || r.d > hsTimeout+2*time.Second {
					t.Errorf("handshake ended after %v, HandshakeTimeout is %v", r.d, hsTimeout)
				}
			} else if r.d > hsTimeout {
				t.Errorf("bad input noticed only after %v", r.d)
			}
			// The session closed the connection.
			p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, p.conn); err != nil && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
				t.Errorf("connection not closed by the failed handshake: %v", err)
			}
		})
	}

	// The client side checks the server's preface the same way.
	t.Run("client, server speaks another version", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.Write([]byte("MUXRPC\x00\x09"))
			io.Copy(io.Discard, c)
		}()
		ctx := testCtx(t, 5*time.Second)
		if s, err := Dial(ctx, "tcp", ln.Addr().String(), cfg); !errors.Is(err, ErrVersion) {
			if s != nil {
				s.Kill()
			}
			t.Fatalf("got %v, want ErrVersion", err)
		}
	})
}

func isConnReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

// TestSmuxGarbage feeds a smux server bytes that are not smux: in place of
// the handshake, they fail it at once; after it, they end the session
// with an error, rather than hang or panic.
func TestSmuxGarbage(t *testing.T) {
	garbage := []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
	t.Run("instead of the handshake", func(t *testing.T) {
		_, res := rawServerSession(t, &Config{Transport: Smux}, garbage)
		select {
		case r := <-res:
			if !errors.Is(r.err, ErrNotMuxrpc) {
				t.Fatalf("Server: %v, want ErrNotMuxrpc", r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Server did not return")
		}
	})
	t.Run("after the handshake", func(t *testing.T) {
		p, res := rawServerSession(t, &Config{Transport: Smux}, smuxClientHello(100))
		var r sessionResult
		select {
		case r = <-res:
		case <-time.After(5 * time.Second):
			t.Fatal("Server did not return")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		p.send(garbage)
		if err := waitDone(t, r.s, 5*time.Second); err == nil {
			t.Fatal("session ended without an error")
		}
	})
}

// TestTruncatedFrame closes the connection in the middle of a frame: the
// session's error is ErrProtocol, not a clean end.
func TestTruncatedFrame(t *testing.T) {
	cases := map[string][]byte{
		"header":        frame(frameData, flagOpen, 1, []byte{0, 1, 2, 3})[:5],
		"data payload":  append(appendFrameHeader(nil, frameHeader{length: 100, typ: frameData, flags: flagOpen, streamID: 1}), make([]byte, 50)...),
		"ping payload":  pingFrame(1, false)[:frameHeaderLen+3],
		"reset payload": resetFrame(1, 0)[:frameHeaderLen+1],
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p, s := rawClientOf(t, nil)
			p.send(b)
			p.conn.Close()
			if err := waitDone(t, s, 5*time.Second); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
	// A clean close between frames is not a protocol error.
	t.Run("between frames", func(t *testing.T) {
		p, s := rawClientOf(t, nil)
		p.send(openFrame(1, TypeDefault, []byte("hi"), false))
		p.conn.Close()
		err := waitDone(t, s, 5*time.Second)
		if !errors.Is(err, io.EOF) || errors.Is(err, ErrProtocol) {
			t.Fatalf("got %v, want io.EOF", err)
		}
	})
}

// TestMalformedFrames sends frames that break the protocol: each ends the
// session with ErrProtocol, and the peer receives a GOAWAY with
// GoAwayProtocolError first. Another session in the process is untouched.
func TestMalformedFrames(t *testing.T) {
	const maxFrame = 4 << 10
	cfg := &Config{MaxFrameSize: maxFrame}
	open1 := openFrame(1, TypeDefault, []byte("x"), false)
	cases := []struct {
		name   string
		frames []byte
	}{
		{"unknown frame type", frame(0x9, 0, 0, nil)},
		{"unknown frame type on a stream", append(open1, frame(0x7f, 0, 1, []byte("abc"))...)},
		{"undefined DATA flag", append(open1, frame(frameData, 0x80, 1, []byte("abc"))...)},
		{"undefined PING flag", frame(framePing, 0x2, 0, make([]byte, 8))},
		{"flag on RESET", append(open1, frame(frameReset, 0x1, 1, word(0))...)},
		{"DATA on stream 0", frame(frameData, 0, 0, []byte("abc"))},
		{"DATA open on stream 0", openFrame(0, TypeDefault, nil, false)},
		{"payload beyond MaxFrameSize", appendFrameHeader(nil, frameHeader{length: maxFrame + 1, typ: frameData, flags: flagOpen, streamID: 1})},
		{"WINDOW_UPDATE with zero increment", append(open1, windowFrame(1, 0)...)},
		{"WINDOW_UPDATE beyond 2^31-1", append(open1, windowFrame(1, 1<<31)...)},
		{"WINDOW_UPDATE on stream 0", windowFrame(0, 100)},
		{"RESET of 3 bytes", append(open1, frame(frameReset, 0, 1, []byte{0, 0, 0})...)},
		{"PING of 4 bytes", frame(framePing, 0, 0, word(1))},
		{"GOAWAY of 4 bytes", frame(frameGoAway, 0, 0, word(0))},
		{"GOAWAY on a stream", frame(frameGoAway, 0, 1, make([]byte, 8))},
		{"GOAWAY beyond MaxFrameSize", frame(frameGoAway, 0, 0, make([]byte, maxFrame+1))},
		{"reserved bit of the stream id", frame(frameData, flagOpen, 1|1<<31, []byte{0})},
		{"SETTINGS after the handshake", appendSettings(nil, rawSettings)},
		{"DATA for a never-opened stream", dataFrame(5, []byte("abc"), false)},
		{"DATA for a never-opened stream of the server's", dataFrame(2, []byte("abc"), false)},
		{"WINDOW_UPDATE for a never-opened stream", windowFrame(7, 100)},
		{"RESET for a never-opened stream", resetFrame(9, ResetCancel)},
		{"stream opened out of order", append(openFrame(5, TypeDefault, nil, false), openFrame(3, TypeDefault, nil, false)...)},
		{"stream opened twice", append(open1, openFrame(1, TypeDefault, nil, false)...)},
		{"stream opened with the server's parity", openFrame(2, TypeDefault, nil, false)},
		{"stream type not a uvarint", frame(frameData, flagOpen, 1, bytes.Repeat([]byte{0xff}, 11))},
		{"stream type over 32 bits", frame(frameData, flagOpen, 1, binary.AppendUvarint(nil, 1<<32))},
		{"open frame without a type", frame(frameData, flagOpen, 1, nil)},
	}
	healthy := healthyPair(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, s := rawClientOf(t, cfg)
			serveEcho(t, s)
			p.send(tc.frames)
			code, _, debug := p.goAway()
			if code != GoAwayProtocolError {
				t.Errorf("GOAWAY code %#x, want GoAwayProtocolError", code)
			}
			if debug == "" {
				t.Errorf("GOAWAY without debug data")
			}
			if err := waitDone(t, s, 5*time.Second); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
			healthy(t)
		})
	}
}

// TestLateFramesIgnored sends frames for a stream that has ended on both
// sides: they are ignored and the session goes on.
func TestLateFramesIgnored(t *testing.T) {
	p, s := rawClientOf(t, nil)
	ctx := testCtx(t, 10*time.Second)
	p.send(openFrame(1, TypeDefault, []byte("hi"), true))
	st, err := s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(st); err != nil || string(got) != "hi" {
		t.Fatalf("read %q, %v", got, err)
	}
	st.Write([]byte("yo"))
	st.Close()
	p.until("the end of stream 1", func(h frameHeader, _ []byte) bool {
		return h.typ == frameData && h.streamID == 1 && h.flags&flagEnd != 0
	})
	if n := s.NumStreams(); n != 0 {
		t.Fatalf("session still counts %d streams", n)
	}
	p.send(dataFrame(1, []byte("late"), false), dataFrame(1, nil, true), windowFrame(1, 1000), resetFrame(1, ResetCancel))
	for _, f := range p.pingPong(1) {
		if f.streamID == 1 {
			t.Errorf("the session answered a late frame with %s", f.typ)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("late frames ended the session: %v", err)
	}
	// The session still takes new streams.
	p.send(openFrame(3, TypeDefault, []byte("again"), true))
	st, err = s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(st); err != nil || string(got) != "again" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// TestFlowControlViolations breaks flow control on one stream, by
// overflowing its send window and by sending beyond its receive window:
// only that stream is reset, with ResetFlowControl, while another stream
// of the session, and another session, keep working.
func TestFlowControlViolations(t *testing.T) {
	const window = minStreamWindow
	const heldType StreamType = 9 // accepted, never read
	healthy := healthyPair(t)
	p, s := rawClientOf(t, &Config{StreamWindow: window})
	serveEcho(t, s)
	ctx := testCtx(t, 10*time.Second)

	// Stream 1 echoes, before and after the violations on streams 3 and 5.
	echoed := func(want string) {
		t.Helper()
		var got []byte
		p.until("the echo on stream 1", func(h frameHeader, payload []byte) bool {
			if h.typ == frameReset && h.streamID == 1 {
				t.Fatalf("stream 1 reset")
			}
			if h.typ == frameData && h.streamID == 1 {
				got = append(got, payload...)
			}
			return len(got) >= len(want)
		})
		if string(got) != want {
			t.Fatalf("echo on stream 1: %q, want %q", got, want)
		}
	}
	p.send(openFrame(1, TypeDefault, []byte("ping"), false))
	echoed("ping")

	p.send(openFrame(3, heldType, []byte("a"), false), openFrame(5, heldType, make([]byte, window-100), false))
	overflowed, err := s.AcceptType(ctx, heldType)
	if err != nil {
		t.Fatal(err)
	}
	defer overflowed.Close()
	flooded, err := s.AcceptType(ctx, heldType)
	if err != nil {
		t.Fatal(err)
	}
	defer flooded.Close()
	if overflowed.ID() != 3 || flooded.ID() != 5 {
		t.Fatalf("accepted streams %d and %d, want 3 and 5", overflowed.ID(), flooded.ID())
	}

	isReset := func(id, code uint32) func(frameHeader, []byte) bool {
		return func(h frameHeader, payload []byte) bool {
			if h.typ == frameReset && h.streamID == id {
				if got := binary.BigEndian.Uint32(payload); got != code {
					t.Fatalf("stream %d reset with code %#x, want %#x", id, got, code)
				}
				return true
			}
			return false
		}
	}
	checkReset := func(what string, err error) {
		t.Helper()
		var re *ResetError
		if !errors.As(err, &re) || re.Code != ResetFlowControl {
			t.Fatalf("%s: got %v, want a ResetError with ResetFlowControl", what, err)
		}
	}

	// Stream 3: a window update that takes the send window past 2^31-1.
	p.send(windowFrame(3, maxWindow))
	p.until("RESET of stream 3", isReset(3, ResetFlowControl))
	_, err = overflowed.Write([]byte("x"))
	checkReset("write on the overflowed stream", err)

	// Stream 5: 100 bytes fit its window, 1 more does not.
	p.send(dataFrame(5, make([]byte, 100), false))
	p.send(dataFrame(5, []byte{1}, false))
	p.until("RESET of stream 5", isReset(5, ResetFlowControl))
	_, err = flooded.Read(make([]byte, 1))
	checkReset("read on the flooded stream", err)

	// Stream 1 goes on, and new streams open.
	p.send(dataFrame(1, []byte("pong"), false))
	echoed("pong")
	p.send(openFrame(7, TypeDefault, []byte("new"), true))
	var got []byte
	p.until("the echo on stream 7", func(h frameHeader, payload []byte) bool {
		if h.typ == frameData && h.streamID == 7 {
			got = append(got, payload...)
			return h.flags&flagEnd != 0
		}
		return false
	})
	if string(got) != "new" {
		t.Fatalf("echo on stream 7: %q", got)
	}
	p.pingPong(7)
	if err := s.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}
	healthy(t)
}

// TestOversizedFrameSmallWindow sends one DATA frame larger than the
// stream's whole window: the stream is reset, the session stays.
func TestOversizedFrameSmallWindow(t *testing.T) {
	p, s := rawClientOf(t, &Config{StreamWindow: minStreamWindow, MaxFrameSize: 4 * minStreamWindow})
	ctx := testCtx(t, 10*time.Second)
	p.send(openFrame(1, TypeDefault, make([]byte, minStreamWindow+1), false))
	_, payload := p.until("RESET of stream 1", func(h frameHeader, _ []byte) bool {
		return h.typ == frameReset && h.streamID == 1
	})
	if code := binary.BigEndian.Uint32(payload); code != ResetFlowControl {
		t.Fatalf("reset code %#x, want ResetFlowControl", code)
	}
	p.send(openFrame(3, TypeDefault, []byte("fine"), true))
	st, err := s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.ID() != 3 {
		t.Fatalf("accepted stream %d; the reset stream 1 should not be offered", st.ID())
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(st); err != nil || string(got) != "fine" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}
