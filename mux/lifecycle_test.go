package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentReadsAllSeeTheEnd blocks two readers on one stream: both
// return after the peer's END, and both return at the read deadline.
func TestConcurrentReadsAllSeeTheEnd(t *testing.T) {
	for _, end := range []string{"END", "deadline"} {
		t.Run(end, func(t *testing.T) {
			c, s := pair(t, nil, nil)
			ctx := testCtx(t, 10*time.Second)
			st, peer := openAccepted(t, ctx, c, s, []byte("x"))
			io.ReadFull(peer, make([]byte, 1))
			errs := make(chan error, 2)
			for range 2 {
				go func() {
					_, err := st.Read(make([]byte, 1))
					errs <- err
				}()
			}
			time.Sleep(20 * time.Millisecond) // both wait
			want := io.EOF
			if end == "END" {
				peer.CloseWrite()
			} else {
				st.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
				want = os.ErrDeadlineExceeded
			}
			for i := range 2 {
				select {
				case err := <-errs:
					if !errors.Is(err, want) {
						t.Fatalf("reader %d: got %v, want %v", i, err, want)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("reader %d still blocked after the %s", i, end)
				}
			}
		})
	}
}

// failingConn fails every Write once broken.
type failingConn struct {
	net.Conn
	broken atomic.Bool
}

func (c *failingConn) Write(p []byte) (int, error) {
	if c.broken.Load() {
		return 0, errors.New("injected write failure")
	}
	return c.Conn.Write(p)
}

// TestOnAbortRunsWithoutSessionLocks has a stream's OnAbort reset a
// sibling stream, then breaks the connection under a Write: the write's
// failure ends the session, the OnAbort runs, and its Reset does not
// deadlock on the failing writer.
func TestOnAbortRunsWithoutSessionLocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := make(chan *Session, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			srv <- nil
			return
		}
		s, _ := Server(conn, nil)
		srv <- s
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fc := &failingConn{Conn: raw}
	c, err := Client(fc, &Config{KeepAliveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	if s := <-srv; s != nil {
		defer s.Kill()
	}
	ctx := testCtx(t, 10*time.Second)
	watched, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sibling, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	watched.Write([]byte("a"))
	sibling.Write([]byte("b"))
	aborted := make(chan struct{})
	watched.OnAbort(func() {
		sibling.Reset(0x100) // takes the send path's lock
		close(aborted)
	})
	fc.broken.Store(true)
	within(t, 2*time.Second, "a Write on a breaking connection", func() error {
		writer, err := c.Open(ctx)
		if err != nil {
			return nil
		}
		writer.Write(make([]byte, 100))
		return nil
	})
	select {
	case <-aborted:
	case <-time.After(2 * time.Second):
		t.Fatal("OnAbort did not run, or its Reset deadlocked")
	}
	if waitDone(t, c, 2*time.Second) == nil {
		t.Fatal("the session ended without an error")
	}
}

// TestStreamIDsExhaustedEndsSessionGracefully starts a client session
// near its last stream id: the stream with the last id completes, opening
// another fails as retry-safe, and the session sends a GoAway and ends
// with ErrStreamIDsExhausted, so that a client knows to reconnect.
func TestStreamIDsExhaustedEndsSessionGracefully(t *testing.T) {
	c, s := pair(t, nil, nil)
	serveEcho(t, s)
	c.mu.Lock()
	c.nextID = maxStreamID - 2 // two ids left: 2^31-3 and 2^31-1
	c.mu.Unlock()
	ctx := testCtx(t, 10*time.Second)
	if err := echo(ctx, c, []byte("second to last")); err != nil {
		t.Fatal(err)
	}
	last, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := echoOn(ctx, last, []byte("last"), false); err != nil {
		t.Fatalf("the stream with the last id: %v", err)
	}
	if last.ID() != maxStreamID {
		t.Fatalf("last stream id %d, want %d", last.ID(), uint32(maxStreamID))
	}
	if _, err := c.Open(ctx); err == nil || !IsRetrySafe(err) {
		t.Fatalf("Open after the last id: got %v, want a retry-safe error", err)
	}
	last.Close()
	err = waitDone(t, c, 5*time.Second)
	if !errors.Is(err, ErrStreamIDsExhausted) {
		t.Fatalf("session error: got %v, want ErrStreamIDsExhausted", err)
	}
	var g *GoAwayError
	waitDone(t, s, 5*time.Second)
	if !errors.As(s.Err(), &g) || !g.Remote {
		t.Fatalf("the peer's session error: got %v, want the GoAway", s.Err())
	}
}

// TestResetStreamIsNotKeptAliveByDeadline resets a stream with a deadline
// an hour away and drops it: the garbage collector reclaims it, since no
// timer refers to it any more.
func TestResetStreamIsNotKeptAliveByDeadline(t *testing.T) {
	c, s := pair(t, nil, nil)
	serveEcho(t, s)
	ctx := testCtx(t, 10*time.Second)
	var collected atomic.Int32
	const streams = 20
	func() {
		for range streams {
			st, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st.Write([]byte("x"))
			st.SetDeadline(time.Now().Add(time.Hour))
			st.Reset(0x100)
			runtime.SetFinalizer(st, func(*Stream) { collected.Add(1) })
		}
	}()
	waitFor(t, "the streams to be collected", func() bool {
		runtime.GC()
		return collected.Load() == streams
	})
}

// TestWindowUpdateForForgottenStreamIgnored sends a WINDOW_UPDATE with
// increment 0 for a stream the session has forgotten, as may cross its
// end on the wire: it is ignored, as PROTOCOL.md §3.4 says, and the
// session goes on.
func TestWindowUpdateForForgottenStreamIgnored(t *testing.T) {
	p, s := rawClientOf(t, nil)
	var wg sync.WaitGroup
	s.HandleType(TypeDefault, func(st *Stream) {
		wg.Add(1)
		defer wg.Done()
		io.Copy(io.Discard, st)
		st.WriteLast([]byte("done"))
	})
	p.send(openFrame(1, TypeDefault, []byte("x"), true))
	p.until("the answer's END", func(h frameHeader, _ []byte) bool { return h.streamID == 1 && h.flags&flagEnd != 0 })
	wg.Wait()
	waitFor(t, "the stream to be forgotten", func() bool { return s.NumStreams() == 0 })
	p.send(windowFrame(1, 0), resetFrame(1, 0x100), windowFrame(1, 5))
	p.pingPong(1)
	if err := s.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}
}

// TestWhatArrivedStaysReadableAfterTheSessionEnds has the peer write
// 200 KiB on a stream and vanish before any of it is read: every byte
// that arrived is read back, in order, before the session's end is
// reported. On smux a Read used to return its bytes together with the
// error of the window update it could no longer send, so that a reader
// (io.ReadAll, rpc's part reader) stopped there and lost the rest.
func TestWhatArrivedStaysReadableAfterTheSessionEnds(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz012345"), 200<<10/32)
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ctx := testCtx(t, 10*time.Second)
			st, peer := openAccepted(t, ctx, c, s, []byte("x"))
			if _, err := peer.Write(data); err != nil {
				t.Fatal(err)
			}
			// A byte on a later stream, once read, proves that the session
			// has taken every byte of the data from its connection: frames
			// arrive in order. Only then does the peer vanish, since the
			// reset of its abrupt close makes the kernel drop what the
			// session has not yet read from the socket.
			_, marker := openAccepted(t, ctx, s, c, []byte("y"))
			if _, err := io.ReadFull(marker, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			s.Kill()
			waitDone(t, c, 5*time.Second)
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(st)
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d of the %d bytes that arrived, then %v", len(got), len(data), err)
			}
			if err == nil {
				t.Fatal("the stream of a session that ended read as ended in order")
			}
		})
	}
}

// heldConn is a connection whose reads, once held, keep what they read
// until released.
type heldConn struct {
	net.Conn
	held    atomic.Bool
	holding atomic.Int32
	release chan struct{}
}

func (c *heldConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.held.Load() {
		c.holding.Add(1)
		<-c.release
	}
	return n, err
}

// TestStreamOpenedAfterTheSessionEndedIsNotServed has a stream's opening
// frame read from the connection just before the session ends, and parsed
// just after (the reader parses what it read before it notices the end):
// the stream is not served, or its handler's Read fails at once, where it
// used to wait forever, since the session's end had passed the stream
// table before the stream joined it (and Peer.Close, waiting for its
// handlers, hung with it).
func TestStreamOpenedAfterTheSessionEndedIsNotServed(t *testing.T) {
	const typ StreamType = 9
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *Session, 1)
	held := &heldConn{release: make(chan struct{})}
	go func() {
		defer close(accepted)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		held.Conn = c
		if s, err := Server(held, nil); err == nil {
			accepted <- s
		} else {
			c.Close()
		}
	}()
	ctx := testCtx(t, 10*time.Second)
	c, err := Dial(ctx, "tcp", ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	s := <-accepted
	if s == nil {
		t.Fatal("the server's session did not start")
	}
	readErr := make(chan error, 1)
	var served atomic.Bool
	s.HandleType(typ, func(st *Stream) {
		served.Store(true)
		_, err := io.ReadAll(st)
		readErr <- err
	})
	held.held.Store(true)
	st, err := c.OpenType(ctx, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to read the opening frame", func() bool { return held.holding.Load() > 0 })
	killed := make(chan struct{})
	go func() {
		s.Kill()
		close(killed)
	}()
	waitFor(t, "the server's session to end", func() bool { return s.Err() != nil })
	held.held.Store(false)
	close(held.release)
	select {
	case <-killed:
	case <-time.After(5 * time.Second):
		t.Fatal("Kill did not return")
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the stream read as ended in order after its session ended")
		}
	case <-time.After(2 * time.Second):
		if served.Load() {
			t.Fatal("the handler's Read still waits, 2 s after the session ended")
		}
	}
}

// TestNothingLeavesAfterTheSessionEnds has the server write on a stream
// the moment its session has ended (as a handler woken by the end does)
// while Kill is still closing it: the client never reads those bytes, on
// either transport. Smux once sent them, its connection still open for an
// instant after Done closed.
func TestNothingLeavesAfterTheSessionEnds(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			for range 20 {
				c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
				ctx := testCtx(t, 10*time.Second)
				st, peer := openAccepted(t, ctx, c, s, []byte("x"))
				wrote := make(chan error, 1)
				go func() {
					<-s.Done()
					_, err := peer.WriteLast([]byte("late"))
					wrote <- err
				}()
				s.Kill()
				werr := <-wrote
				buf := make([]byte, 16)
				n, err := st.Read(buf)
				if n > 0 {
					t.Fatalf("the client read %q, written after the session ended (the write returned %v)", buf[:n], werr)
				}
				if err == nil {
					t.Fatal("the client's read neither failed nor returned bytes")
				}
				if werr == nil {
					t.Error("a write after the session ended succeeded")
				}
			}
		})
	}
}
