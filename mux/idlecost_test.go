package mux

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// What an idle session holds: no read buffer while its reader waits, no
// send buffer once a write has emptied it, and nothing that outlives its
// end but what Session.AfterFunc asked for.

// tcpConns returns the two ends of a loopback TCP connection, closed
// when the test ends.
func tcpConns(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// TestReaderWaitsHoldingNoBuffer reads a TCP connection through a
// connReader: it holds a buffer while bytes wait in it, even part of a
// frame, and none once it has consumed them all and waits for more.
func TestReaderWaitsHoldingNoBuffer(t *testing.T) {
	a, b := tcpConns(t)
	var heard atomic.Int64
	r := newConnReader(b, &heard)
	if r.raw == nil {
		t.Skip("no raw reads on this platform")
	}
	waitBriefly := func(what string) {
		t.Helper()
		b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		defer b.SetReadDeadline(time.Time{})
		if _, err := r.Peek(r.Buffered() + 1); !isTimeout(err) {
			t.Fatalf("%s: Peek found %v, want a timeout", what, err)
		}
	}
	if _, err := a.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	if p, err := r.Peek(5); err != nil || string(p) != "hello" {
		t.Fatalf("Peek(5) = %q, %v", p, err)
	}
	if heard.Load() == 0 {
		t.Error("bytes arrived unheard: keepalive would not know")
	}
	if r.box == nil {
		t.Fatal("holds no buffer with bytes unread")
	}
	if n, err := r.Discard(6); n != 6 || err != nil {
		t.Fatalf("Discard(6) = %d, %v", n, err)
	}
	waitBriefly("with part of the input unread")
	if r.box == nil || r.Buffered() != 5 {
		t.Fatalf("waiting with 5 bytes unread, the reader holds %d (buffer %v)", r.Buffered(), r.box != nil)
	}
	if n, err := r.Discard(5); n != 5 || err != nil {
		t.Fatalf("Discard(5) = %d, %v", n, err)
	}
	waitBriefly("with all consumed")
	if r.box != nil {
		t.Fatal("waits for bytes holding a buffer")
	}

	// Large reads go straight into the caller's slice, holding no buffer
	// either, and bytes arriving during a wait are found.
	go a.Write(bytes.Repeat([]byte("x"), readBufferSize))
	big := make([]byte, readBufferSize)
	n, err := r.Read(big)
	if err != nil || n == 0 || r.box != nil {
		t.Fatalf("Read of %d bytes = %d, %v, holding a buffer %v", len(big), n, err, r.box != nil)
	}
}

// TestSendBuffersGoBackWhenEmpty checks that a session holds no send
// buffer once what it queued has been written.
func TestSendBuffersGoBackWhenEmpty(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	c, s := pair(t, nil, nil)
	st, peer := openAccepted(t, ctx, c, s, []byte("hello"))
	if _, err := peer.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := st.Read(buf); err != nil {
		t.Fatal(err)
	}
	for _, sess := range []*Session{c, s} {
		held := func() bool {
			sess.wmu.Lock()
			defer sess.wmu.Unlock()
			return sess.bufs != nil || cap(sess.wbuf)+cap(sess.wspare)+cap(sess.lane)+cap(sess.laneSpare) > 0
		}
		// A frame queued a moment ago may still be on its way out.
		if !soon(2*time.Second, func() bool { return !held() }) {
			t.Errorf("client %v: the send path holds buffers with nothing to send", sess.IsClient())
		}
	}
}

// TestSessionAfterFunc checks AfterFunc: f runs once the session has
// ended, at once on an ended session, and never once stopped.
func TestSessionAfterFunc(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, _ := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ran := make(chan error, 2)
			c.AfterFunc(func() { ran <- c.Err() })
			stop := c.AfterFunc(func() { t.Error("a stopped AfterFunc ran") })
			if !stop() {
				t.Fatal("stop on a running session reports that f was not stopped")
			}
			if stop() {
				t.Fatal("a second stop reports that it stopped f")
			}
			select {
			case <-ran:
				t.Fatal("f ran before the session ended")
			case <-time.After(10 * time.Millisecond):
			}
			c.Kill()
			if err := <-ran; err == nil {
				t.Fatal("f ran while Err was still nil")
			}
			stop = c.AfterFunc(func() { ran <- c.Err() })
			if err := <-ran; err == nil {
				t.Fatal("f on an ended session ran while Err was nil")
			}
			if stop() {
				t.Fatal("stop after f started reports that it stopped f")
			}
		})
	}
}
