package mux

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// congestedSession returns a server session whose raw peer grants every
// stream the largest window and then never reads, with small socket
// buffers on both ends, so that the connection congests after a few
// hundred KiB.
func congestedSession(t *testing.T, cfg *Config) (*rawPeer, *Session) {
	t.Helper()
	p, s := rawClientWith(t, cfg, settings{maxIncomingStreams: 100, initialWindow: maxWindow, maxFrameSize: 1 << 16})
	s.Conn().(*net.TCPConn).SetWriteBuffer(8 << 10)
	p.conn.(*net.TCPConn).SetReadBuffer(8 << 10)
	return p, s
}

// within runs f and fails the test unless it returns within d; it returns
// f's error.
func within(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s still blocked after %v", what, d)
		return nil
	}
}

// TestCongestedConnectionHonoursDeadlinesCloseAndReset fills a connection
// whose peer has stopped reading. A Write past its deadline returns
// ErrDeadlineExceeded, a small Write with a deadline on another stream
// returns by its deadline, Close of a third stream and Reset of a stream
// blocked in Write without deadline return at once, and the session's
// Close is bounded by CloseTimeout.
func TestCongestedConnectionHonoursDeadlinesCloseAndReset(t *testing.T) {
	_, s := congestedSession(t, &Config{KeepAliveInterval: -1, CloseTimeout: 300 * time.Millisecond})
	ctx := testCtx(t, 20*time.Second)
	open := func() *Stream {
		st, err := s.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte("hello")); err != nil { // on the wire while it still flows
			t.Fatal(err)
		}
		return st
	}
	stuck, other, third, unbounded := open(), open(), open(), open()

	stuck.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	err := within(t, 3*time.Second, "Write past its deadline", func() error {
		_, err := stuck.Write(make([]byte, 64<<20))
		return err
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("congested Write: got %v, want ErrDeadlineExceeded", err)
	}

	within(t, time.Second, "Close of another stream", other.Close)

	third.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	err = within(t, time.Second, "small Write with a deadline", func() error {
		_, err := third.Write(make([]byte, 10))
		return err
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("small Write on a congested connection: %v", err)
	}

	blocked := make(chan error, 1)
	go func() {
		_, err := unbounded.Write(make([]byte, 1<<20))
		blocked <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it block
	within(t, time.Second, "Reset of a stream blocked in Write", func() error { return unbounded.Reset(0x100) })
	select {
	case err := <-blocked:
		var re *ResetError
		if !errors.As(err, &re) || re.Code != 0x100 {
			t.Fatalf("Write ended by Reset: got %v, want the reset", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Write still blocked after its stream's Reset")
	}

	within(t, 2*time.Second, "Session.Close with a peer that does not read", s.Close)
}

// TestCloseBoundedOverPipeWithoutReader closes a session on a net.Pipe
// whose other end completed the handshake and then stopped reading, with
// keepalive off: Close returns after about CloseTimeout.
func TestCloseBoundedOverPipeWithoutReader(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { // the peer's handshake, then silence
		b.Write(appendSettings(appendPreface(nil), rawSettings))
		buf := make([]byte, prefaceLen+frameHeaderLen+3*settingLen)
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		for n := 0; n < len(buf); {
			m, err := b.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
		}
	}()
	s, err := Server(a, &Config{KeepAliveInterval: -1, CloseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Open(testCtx(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	go st.Write([]byte("never read")) // the pipe takes nothing: the write stays queued
	start := time.Now()
	within(t, 3*time.Second, "Close", s.Close)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("Close returned after %v, before its CloseTimeout with a stream open", d)
	}
	if !errors.Is(s.Err(), ErrSessionClosed) {
		t.Fatalf("Err after Close: %v", s.Err())
	}
}

// TestReadOnUnopenedStreamDoesNotWaitForWrite reads, with a deadline, on a
// stream whose first Write waits for room on a congested connection: the
// Read does not queue behind that Write to announce the stream (which
// could deadlock a Write waiting for window that only the Read returns),
// and ends at its deadline.
func TestReadOnUnopenedStreamDoesNotWaitForWrite(t *testing.T) {
	_, s := congestedSession(t, &Config{KeepAliveInterval: -1, CloseTimeout: 100 * time.Millisecond})
	ctx := testCtx(t, 20*time.Second)
	filler, err := s.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	filler.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	filler.Write(make([]byte, 64<<20)) // until the send buffer is full
	st, err := s.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go st.Write(make([]byte, 1<<10)) // waits for room, before its first frame
	time.Sleep(50 * time.Millisecond)
	st.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	err = within(t, 2*time.Second, "Read on a stream whose first Write waits", func() error {
		_, err := st.Read(make([]byte, 1))
		return err
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read: got %v, want ErrDeadlineExceeded", err)
	}
	st.Reset(0x100)
	s.Kill()
}
