package mux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Tests of what the Smux transport learns from the frames as they pass:
// Stream.OnAbort, and the stream type riding in the first data frame.

// abortWatch registers an OnAbort function on st that closes the channel
// it returns, and fails the test if OnAbort refuses.
func abortWatch(t *testing.T, st *Stream) <-chan struct{} {
	t.Helper()
	fired := make(chan struct{})
	if err := st.OnAbort(func() { close(fired) }); err != nil {
		t.Fatalf("OnAbort: %v", err)
	}
	return fired
}

// awaitClosed fails the test unless c is closed within d.
func awaitClosed(t *testing.T, c <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// TestSmuxOnAbortPeerClose: on the Smux transport OnAbort's function runs
// when the peer closes the stream before this side does, on either side
// of the stream, and at once when OnAbort comes after the peer's close.
func TestSmuxOnAbortPeerClose(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	c, s := pair(t, withTransport(nil, Smux), withTransport(nil, Smux))

	st, peer := openAccepted(t, ctx, c, s, []byte("x"))
	fired := abortWatch(t, peer)
	st.Close()
	awaitClosed(t, fired, 5*time.Second, "the acceptor's OnAbort after the opener's close")

	st, peer = openAccepted(t, ctx, c, s, []byte("x"))
	fired = abortWatch(t, st)
	peer.Close()
	awaitClosed(t, fired, 5*time.Second, "the opener's OnAbort after the acceptor's close")

	// Registered after the peer's close arrived: runs before OnAbort returns.
	st, peer = openAccepted(t, ctx, c, s, []byte("x"))
	st.Close()
	if _, err := io.ReadAll(peer); err != nil {
		t.Fatalf("reading to the opener's close: %v", err)
	}
	ran := false
	if err := peer.OnAbort(func() { ran = true }); err != nil || !ran {
		t.Fatalf("OnAbort after the peer's close: returned %v, function ran: %v; want nil, true", err, ran)
	}
}

// TestSmuxOnAbortSessionEnd: OnAbort's function runs on both sides when
// the session ends under an open stream, whichever side ended it.
func TestSmuxOnAbortSessionEnd(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	c, s := pair(t, withTransport(nil, Smux), withTransport(nil, Smux))
	st, peer := openAccepted(t, ctx, c, s, []byte("x"))
	local, remote := abortWatch(t, st), abortWatch(t, peer)
	c.Kill()
	awaitClosed(t, local, 5*time.Second, "OnAbort on the side whose session was killed")
	awaitClosed(t, remote, 5*time.Second, "OnAbort on the side whose peer went away")
}

// TestSmuxOnAbortNotOnOwnClose: a stream this side closed is not
// aborted, whatever follows: neither the peer's close nor the session's
// end runs its OnAbort function.
func TestSmuxOnAbortNotOnOwnClose(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	c, s := pair(t, withTransport(nil, Smux), withTransport(nil, Smux))
	st, peer := openAccepted(t, ctx, c, s, []byte("x"))
	fired := abortWatch(t, peer)
	if _, err := peer.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	var b [1]byte
	if err := readFullStream(st, b[:]); err != nil {
		t.Fatalf("reading the acceptor's byte: %v", err)
	}
	st.Close()
	// The opener's FIN follows its close; a stream opened and answered
	// after it proves the FIN has been processed.
	st2, peer2 := openAccepted(t, ctx, c, s, []byte("z"))
	if _, err := peer2.Write([]byte("w")); err != nil {
		t.Fatal(err)
	}
	if err := readFullStream(st2, b[:]); err != nil {
		t.Fatal(err)
	}
	c.Kill()
	s.Kill()
	select {
	case <-fired:
		t.Fatal("OnAbort's function ran for a stream this side had closed")
	default:
	}
}

// TestSmuxTypeRidesWithFirstData: an opened stream's type travels in the
// same PSH frame as its first bytes, and alone before a first Read that
// comes before any Write, so that the peer can answer a stream that
// waits to be spoken to.
func TestSmuxTypeRidesWithFirstData(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		s   *Session
		err error
	}
	accepted := make(chan result, 1)
	rec := &recordingConn{}
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			accepted <- result{err: err}
			return
		}
		rec.Conn = conn
		s, err := Server(rec, withTransport(nil, Smux))
		accepted <- result{s, err}
	}()
	c, err := Dial(ctx, "tcp", ln.Addr().String(), withTransport(nil, Smux))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	s := r.s
	defer s.Kill()

	const typ = 300 // two bytes as a uvarint
	st, err := c.OpenType(ctx, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	peer, err := s.AcceptType(ctx, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	var got [5]byte
	if err := readFullStream(peer, got[:]); err != nil || string(got[:]) != "hello" {
		t.Fatalf("acceptor read %q, %v; want hello", got, err)
	}
	want := binary.AppendUvarint(nil, typ)
	want = append(want, "hello"...)
	if !rec.sawPSH(st.ID(), want) {
		t.Errorf("no PSH frame of stream %d carries type and first bytes together (%x)", st.ID(), want)
	}

	// A stream that reads first: its type goes alone, and the acceptor,
	// which has admitted it, can answer.
	st2, err := c.OpenType(ctx, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	errc := make(chan error, 1)
	go func() {
		var b [2]byte
		err := readFullStream(st2, b[:])
		if err == nil && string(b[:]) != "hi" {
			err = io.ErrUnexpectedEOF
		}
		errc <- err
	}()
	peer2, err := s.AcceptType(ctx, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer peer2.Close()
	if _, err := peer2.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("the opener's first Read: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the opener's first Read got no answer")
	}
}

// recordingConn records the smux frames its peer sends it.
type recordingConn struct {
	net.Conn
	mu sync.Mutex
	in []byte // everything read
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in = append(c.in, p[:n]...)
	c.mu.Unlock()
	return n, err
}

// sawPSH reports whether a PSH frame for stream sid with payload arrived.
func (c *recordingConn) sawPSH(sid uint32, payload []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.in
	for len(b) >= smuxHeaderLen {
		n := int(binary.LittleEndian.Uint16(b[2:]))
		if len(b) < smuxHeaderLen+n {
			break
		}
		if b[1] == smuxPSH && binary.LittleEndian.Uint32(b[4:]) == sid && bytes.Equal(b[smuxHeaderLen:smuxHeaderLen+n], payload) {
			return true
		}
		b = b[smuxHeaderLen+n:]
	}
	return false
}

// TestSmuxSplitTypeStillTimesOut: a stream whose first data frame ends
// within its type, the rest never coming, is closed by the handshake
// timeout, though its first byte came at once and was read without one.
func TestSmuxSplitTypeStillTimesOut(t *testing.T) {
	const hsTimeout = 300 * time.Millisecond
	l, err := Listen("tcp", "127.0.0.1:0", &Config{Transport: Smux, HandshakeTimeout: hsTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	raw := rawSmuxClient(t, l.Addr().String())
	s := acceptSession(t, l, 5*time.Second)
	defer s.Kill()
	st, err := raw.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte{0x80}); err != nil { // a uvarint that goes on
		t.Fatal(err)
	}
	start := time.Now()
	st.SetReadDeadline(start.Add(10 * time.Second))
	var b [1]byte
	n, err := st.Read(b[:])
	if err != io.EOF {
		t.Fatalf("the stream with half a type: read %d bytes, %v; want EOF from the server's close", n, err)
	}
	if d := time.Since(start); d > hsTimeout+5*time.Second {
		t.Fatalf("the server closed the stream after %v; HandshakeTimeout is %v", d, hsTimeout)
	}
	waitFor(t, "the stream's slot to free", func() bool { return s.NumStreams() == 0 })
}

// gatedConn is a connection whose reads can be held: while the gate is
// shut, Read waits for it to open.
type gatedConn struct {
	net.Conn
	mu     sync.Mutex
	gate   chan struct{} // nil: open
	parked chan struct{} // closed when a Read waits at the shut gate
}

func (g *gatedConn) shut() {
	g.mu.Lock()
	g.gate, g.parked = make(chan struct{}), make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedConn) open() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

func (g *gatedConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	gate, parked := g.gate, g.parked
	if gate != nil {
		select {
		case <-parked:
		default:
			close(parked)
		}
	}
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.Conn.Read(p)
}

// TestSmuxFlushWaitsForWrittenBytes checks that Session.Flush on the Smux
// transport returns only once what the streams wrote is on the
// connection: over a pipe whose far end has stopped reading it waits
// until its context ends, and once the far end reads again it returns
// nil.
func TestSmuxFlushWaitsForWrittenBytes(t *testing.T) {
	a, b := net.Pipe()
	far := &gatedConn{Conn: b}
	cfg := withTransport(nil, Smux)
	type result struct {
		s   *Session
		err error
	}
	served := make(chan result, 1)
	go func() {
		s, err := Server(far, cfg)
		served <- result{s, err}
	}()
	cs, err := Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Kill()
	r := <-served
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.s.Kill()

	ctx := testCtx(t, 10*time.Second)
	st, err := cs.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	far.shut()
	// A Read under way when the gate shut takes this, and the next waits.
	if _, err := st.Write([]byte("read by a Read under way")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-far.parked:
	case <-ctx.Done():
		t.Fatal("the far end never came back to read")
	}
	if _, err := st.Write([]byte("queued while the far end does not read")); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := cs.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush while the far end does not read: %v, want context.DeadlineExceeded", err)
	}
	far.open()
	if err := cs.Flush(ctx); err != nil {
		t.Fatalf("Flush once the far end reads: %v", err)
	}
}

// TestSmuxUnusedOpenedStreamOutlivesPeerHandshakeTimeout opens a Smux
// stream and leaves it unused past the peer's handshake timeout, within
// which the peer must learn its type: the session sends the type alone
// meanwhile, so the stream is admitted and carries what is written late.
func TestSmuxUnusedOpenedStreamOutlivesPeerHandshakeTimeout(t *testing.T) {
	const hsTimeout = 400 * time.Millisecond
	cfg := &Config{Transport: Smux, HandshakeTimeout: hsTimeout}
	cs, ss := pair(t, cfg, cfg)
	ctx := testCtx(t, 10*time.Second)
	st, err := cs.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	in, err := ss.Accept(ctx)
	if err != nil {
		t.Fatalf("the unused stream never reached the peer: %v", err)
	}
	defer in.Close()
	time.Sleep(hsTimeout + 200*time.Millisecond) // past the peer's deadline for the type
	if _, err := st.Write([]byte("late")); err != nil {
		t.Fatalf("writing late: %v", err)
	}
	got := make([]byte, 4)
	if err := readFullStream(in, got); err != nil || string(got) != "late" {
		t.Fatalf("the peer read %q, %v; want %q", got, err, "late")
	}
}
