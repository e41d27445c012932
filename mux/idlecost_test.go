package mux

import (
	"net"
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
