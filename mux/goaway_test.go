package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// TestGoAway checks what a GoAway promises: streams the server has taken
// complete normally, a stream whose first frame reaches the server after
// the GoAway fails as never processed (retry-safe), the client's later
// Opens fail with ErrRefused and ErrGoAway carrying the code and debug
// data, and an error of a stream that was processed is not retry-safe.
func TestGoAway(t *testing.T) {
	const code = 0x77
	const resetType StreamType = 5 // the server reads one byte, then resets
	c, s, p := proxyPair(t, nil, nil)
	serveEcho(t, s)
	serve(t, s, resetType, func(st *Stream) {
		st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(st, make([]byte, 2)); err == nil {
			st.Reset(0x300)
		}
	})
	serveEcho(t, c)
	ctx := testCtx(t, 10*time.Second)

	// Taken by the server before its GoAway.
	early, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	early.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := early.Write([]byte("before ")); err != nil {
		t.Fatal(err)
	}
	processed, err := c.OpenType(ctx, resetType)
	if err != nil {
		t.Fatal(err)
	}
	defer processed.Close()
	processed.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := processed.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to take both streams", func() bool { return s.NumStreams() == 2 })

	// The client does not hear of the GoAway before its next stream's
	// first frame reaches the server.
	p.pause(toClient, true)
	late, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	late.SetDeadline(time.Now().Add(5 * time.Second))
	if err := s.GoAway(code, []byte("maintenance")); err != nil {
		t.Fatal(err)
	}
	if _, err := late.Write([]byte("too late")); err != nil {
		t.Fatalf("write of a stream the client does not know is refused: %v", err)
	}
	waitFor(t, "the late stream to reach the server", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return late.ID() != 0 && s.lastPeerID == late.ID()
	})
	p.pause(toClient, false)

	_, err = late.Read(make([]byte, 1))
	if !IsRetrySafe(err) || !errors.Is(err, ErrRefused) {
		t.Fatalf("stream that reached the server after its GoAway: %v, want a retry-safe error", err)
	}
	_, err = c.Open(ctx)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrGoAway) || !IsRetrySafe(err) {
		t.Fatalf("Open after the GoAway: got %v, want ErrRefused and ErrGoAway", err)
	}
	var ga *GoAwayError
	if !errors.As(err, &ga) || ga.Code != code || string(ga.Debug) != "maintenance" || !ga.Remote || ga.LastStreamID != processed.ID() {
		t.Fatalf("Open after the GoAway: %#v, want code %#x, debug, Remote, last stream %d", ga, code, processed.ID())
	}

	// The stream taken before the GoAway completes normally.
	if _, err := early.Write([]byte("and after")); err != nil {
		t.Fatal(err)
	}
	if err := early.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(early); err != nil || string(got) != "before and after" {
		t.Fatalf("stream taken before the GoAway: read %q, %v", got, err)
	}
	// One the server processed and then reset is not retry-safe.
	if _, err := processed.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	_, err = processed.Read(make([]byte, 1))
	var re *ResetError
	if !errors.As(err, &re) || re.Code != 0x300 || !re.Remote || IsRetrySafe(err) {
		t.Fatalf("processed stream reset by the server: %v, want a ResetError 0x300 that is not retry-safe", err)
	}

	// The side that sent the GoAway may still open streams, and a second
	// GoAway changes nothing.
	if err := echo(ctx, s, []byte("server after its GoAway")); err != nil {
		t.Fatal(err)
	}
	if err := s.GoAway(code+1, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("GoAway ended the client's session: %v", err)
	}
}

// TestGoAwayUnsupportedOnSmux: smux has no GoAway.
func TestGoAwayUnsupportedOnSmux(t *testing.T) {
	c, s := pair(t, &Config{Transport: Smux}, &Config{Transport: Smux})
	if err := s.GoAway(GoAwayNormal, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("GoAway on smux: %v, want ErrUnsupported", err)
	}
	if _, err := c.Ping(testCtx(t, time.Second)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Ping on smux: %v, want ErrUnsupported", err)
	}
}

// TestGracefulClose checks Session.Close: it refuses new streams, lets the
// one in flight finish, then ends; the client's error is then the
// server's GoAway (a *GoAwayError with GoAwayNormal) and Done fires. On
// smux, which has no GoAway, the in-flight stream finishes the same way
// and the client sees the connection end.
func TestGracefulClose(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			serveEcho(t, s)
			ctx := testCtx(t, 10*time.Second)
			st, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			st.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := st.Write([]byte("in flight ")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the server to take the stream", func() bool { return s.NumStreams() == 1 })
			closed := make(chan error, 1)
			start := time.Now()
			go func() { closed <- s.Close() }()

			if tr == Native {
				// The client hears of the GoAway: its opens fail, retry-safe.
				waitFor(t, "the client to hear of the GoAway", func() bool {
					st2, err := c.Open(ctx)
					if err != nil {
						if !IsRetrySafe(err) || !errors.Is(err, ErrGoAway) {
							t.Fatalf("Open during the server's Close: %v, want a retry-safe GoAway error", err)
						}
						return true
					}
					st2.Close()
					return false
				})
			} else {
				waitFor(t, "the server to start closing", func() bool {
					s.mu.Lock()
					defer s.mu.Unlock()
					return s.closing
				})
			}
			select {
			case <-closed:
				t.Fatal("Close returned with a stream in flight")
			case <-c.Done():
				t.Fatal("client session ended with a stream in flight")
			default:
			}
			want := "in flight and done"
			if _, err := st.Write([]byte("and done")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if tr == Native {
				st.CloseWrite()
				got, err = io.ReadAll(st)
			} else {
				_, err = io.ReadFull(st, got)
			}
			if err != nil || string(got) != want {
				t.Fatalf("in-flight stream: read %q, %v", got, err)
			}
			st.Close()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Close did not return once the stream finished")
			}
			if d := time.Since(start); d > defaultCloseTimeout-time.Second {
				t.Errorf("Close took %v: it waited for its timeout, not for the stream", d)
			}
			if err := waitDone(t, c, 5*time.Second); tr == Native {
				var ga *GoAwayError
				if !errors.As(err, &ga) || ga.Code != GoAwayNormal || !ga.Remote {
					t.Fatalf("client's error after the server's Close: %v, want the server's GoAway", err)
				}
			} else if err == nil {
				t.Fatal("client's session ended without an error")
			}
			if err := s.Err(); !errors.Is(err, ErrSessionClosed) {
				t.Fatalf("server's error after Close: %v, want ErrSessionClosed", err)
			}
		})
	}
}

// TestCloseTimeout: a stream that does not finish does not hold Close
// beyond CloseTimeout; it fails then.
func TestCloseTimeout(t *testing.T) {
	const closeTimeout = 200 * time.Millisecond
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{CloseTimeout: closeTimeout}, tr))
			ctx := testCtx(t, 10*time.Second)
			_, peer := openAccepted(t, ctx, c, s, []byte("x"))
			readErr := make(chan error, 1)
			go func() {
				_, err := peer.Read(make([]byte, 10))
				_, err = peer.Read(make([]byte, 10))
				readErr <- err
			}()
			start := time.Now()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < closeTimeout-20*time.Millisecond || d > closeTimeout+2*time.Second {
				t.Fatalf("Close with a stuck stream took %v, CloseTimeout is %v", d, closeTimeout)
			}
			select {
			case err := <-readErr:
				if err == nil {
					t.Fatal("stream read succeeded after Close")
				}
			case <-time.After(2 * time.Second):
				t.Fatal("stream still blocked after Close")
			}
			waitDone(t, c, 5*time.Second)
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

// TestGoAwayDebugFitsPeerFrameSize: a GOAWAY must fit the receiver's
// MaxFrameSize, so GoAway refuses debug data that would not, and the
// largest that fits arrives intact.
func TestGoAwayDebugFitsPeerFrameSize(t *testing.T) {
	c, s := pair(t, &Config{MaxFrameSize: minFrameSize}, nil)
	if err := s.GoAway(GoAwayNormal, make([]byte, minFrameSize-7)); err == nil {
		t.Fatal("GoAway sent debug data beyond the peer's frame size")
	}
	debug := pattern(1, minFrameSize-8)
	if err := s.GoAway(0x5, debug); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 5*time.Second)
	waitFor(t, "the GoAway to arrive", func() bool {
		st, err := c.Open(ctx)
		if err != nil {
			var ga *GoAwayError
			if !errors.As(err, &ga) || ga.Code != 0x5 || !bytes.Equal(ga.Debug, debug) {
				t.Fatalf("Open after the GoAway: %v", err)
			}
			return true
		}
		st.Close()
		return false
	})
	if err := c.Err(); err != nil {
		t.Fatalf("the GoAway broke the client's session: %v", err)
	}
}

// TestSecondGoAwayNeverRaisesLastStreamID sends a GoAway, lets the raw
// peer open a stream past it (refused, which raises the highest id seen),
// then breaks the protocol: the GoAway that says why the session ends
// carries no higher Last-Stream-ID than the first.
func TestSecondGoAwayNeverRaisesLastStreamID(t *testing.T) {
	p, s := rawClientOf(t, nil)
	p.send(openFrame(1, TypeDefault, []byte("seen"), false))
	p.pingPong(1)
	if err := s.GoAway(GoAwayNormal, nil); err != nil {
		t.Fatal(err)
	}
	code, first, _ := p.goAway()
	if code != GoAwayNormal || first != 1 {
		t.Fatalf("first GoAway: code %d, last %d", code, first)
	}
	p.send(openFrame(3, TypeDefault, []byte("late"), true))
	p.until("the refusal", func(h frameHeader, _ []byte) bool { return h.typ == frameReset && h.streamID == 3 })
	p.send(frame(frameSettings, 0, 0, nil)) // SETTINGS after the handshake
	code, second, _ := p.goAway()
	if code != GoAwayProtocolError {
		t.Fatalf("second GoAway: code %d, want PROTOCOL_ERROR", code)
	}
	if second > first {
		t.Fatalf("second GoAway raised Last-Stream-ID from %d to %d", first, second)
	}
}

// TestLaterGoAwayCodeIsKept receives a GoAway(NORMAL) and then a
// GoAway(PROTOCOL_ERROR) with the same Last-Stream-ID before the peer
// closes: the session's error is the later one, which says why it ended.
func TestLaterGoAwayCodeIsKept(t *testing.T) {
	p, s := rawClientOf(t, nil)
	goAway := func(code uint32, debug string) []byte {
		return frame(frameGoAway, 0, 0, append(append(word(0), word(code)...), debug...))
	}
	p.send(goAway(GoAwayNormal, ""), goAway(GoAwayProtocolError, "you broke it"))
	p.pingPong(1)
	p.conn.Close()
	err := waitDone(t, s, 5*time.Second)
	var g *GoAwayError
	if !errors.As(err, &g) || g.Code != GoAwayProtocolError || string(g.Debug) != "you broke it" || !g.Remote {
		t.Fatalf("session error: got %v, want the peer's PROTOCOL_ERROR GoAway", err)
	}
	if !errors.Is(err, ErrGoAway) {
		t.Fatalf("errors.Is(%v, ErrGoAway) = false", err)
	}
}

// TestGoAwayExcludesOnlyNewlyExcludedStreams checks the lookup a GoAway
// makes: the streams of this side with ids in the newly excluded range,
// whichever way it is searched, and nothing for a GoAway that lowers
// nothing.
func TestGoAwayExcludesOnlyNewlyExcludedStreams(t *testing.T) {
	c, _ := pair(t, nil, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range []uint32{1, 3, 5, 101, 1001} {
		c.streams[id] = &Stream{}
	}
	c.streams[4] = &Stream{} // the peer's
	for _, tc := range []struct {
		low, high uint32
		want      int
	}{
		{0, 1001, 5}, {3, 1001, 3}, {5, 101, 1}, {101, 101, 0}, {1001, 5, 0}, {0, 2, 1}, {1000, 1<<31 - 1, 1},
	} {
		if got := len(c.ownStreamsBetweenLocked(tc.low, tc.high)); got != tc.want {
			t.Errorf("streams in (%d, %d]: %d, want %d", tc.low, tc.high, got, tc.want)
		}
	}
	for id := range c.streams {
		delete(c.streams, id)
	}
}

// TestUnsentStreamFailsWholeWhenItCanNoLongerBeSent opens a stream and
// writes nothing on it until the peer's GoAway has arrived, or the
// session has ended: its first Write fails retry-safe, and so does a Read
// at once, instead of waiting for a peer that will never hear of the
// stream; the stream gives back its slot, so that Close does not wait
// CloseTimeout for it.
func TestUnsentStreamFailsWholeWhenItCanNoLongerBeSent(t *testing.T) {
	for _, how := range []string{"GoAway", "session ended"} {
		t.Run(how, func(t *testing.T) {
			c, s := pair(t, &Config{CloseTimeout: 10 * time.Second}, nil)
			ctx := testCtx(t, 20*time.Second)
			st, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if how == "GoAway" {
				if err := s.GoAway(GoAwayNormal, nil); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the GoAway to arrive", func() bool {
					c.mu.Lock()
					defer c.mu.Unlock()
					return c.goAwayRecv != nil
				})
			} else {
				s.Kill()
				select {
				case <-c.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the client's session did not end")
				}
			}
			if _, err := st.Write([]byte("late")); !IsRetrySafe(err) {
				t.Fatalf("Write: got %v, want a retry-safe error", err)
			}
			read := make(chan error, 1)
			go func() {
				_, err := st.Read(make([]byte, 1))
				read <- err
			}()
			select {
			case err := <-read:
				if !IsRetrySafe(err) {
					t.Fatalf("Read: got %v, want a retry-safe error", err)
				}
			case <-time.After(3 * time.Second):
				st.Close() // lets the Read return
				<-read
				t.Fatal("Read waited for a stream the peer will never hear of")
			}
			if n := c.NumStreams(); n != 0 {
				t.Errorf("the session still counts %d streams", n)
			}
			began := time.Now()
			c.Close()
			if took := time.Since(began); took > 3*time.Second {
				t.Errorf("Close took %v, waiting for the unsent stream", took)
			}
		})
	}
}

// TestCloseDeliversTheLastWriteOfAStreamInFlight closes the session of a
// handler that has yet to write its stream's answer, 1 MiB (four of the
// peer's windows), with WriteLast: Close waits for the answer to leave,
// and the peer reads all of it, on smux too, where WriteLast frees the
// stream's slot before its bytes go out.
func TestCloseDeliversTheLastWriteOfAStreamInFlight(t *testing.T) {
	const typ StreamType = 7
	answer := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{CloseTimeout: 10 * time.Second}, tr))
			ctx := testCtx(t, 20*time.Second)
			release, served := make(chan struct{}), make(chan error, 1)
			s.HandleType(typ, func(st *Stream) {
				defer st.Close()
				if _, err := io.ReadFull(st, make([]byte, 4)); err != nil {
					served <- err
					return
				}
				<-release
				_, err := st.WriteLast(answer)
				served <- err
			})
			st, err := c.OpenType(ctx, typ)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			st.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := st.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the server to take the stream", func() bool { return s.NumStreams() == 1 })
			closed := make(chan struct{})
			go func() {
				s.Close()
				close(closed)
			}()
			select {
			case <-closed:
				t.Fatal("Close returned with a stream in flight")
			case <-time.After(200 * time.Millisecond):
			}
			close(release)
			got, err := io.ReadAll(st)
			if !bytes.Equal(got, answer) {
				t.Errorf("the peer read %d of the answer's %d bytes (%v)", len(got), len(answer), err)
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return")
			}
			if err := <-served; err != nil {
				t.Errorf("the handler's WriteLast: %v", err)
			}
		})
	}
}

// TestDraining checks that Draining closes when this side can open no
// more streams, for each of the reasons, and not before, while the streams
// open then go on.
func TestDraining(t *testing.T) {
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	waitClosed := func(t *testing.T, c <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("Draining still open after %s", what)
		}
	}
	t.Run("peer's GoAway", func(t *testing.T) {
		c, s := pair(t, nil, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		open, err := c.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := open.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		accepted, err := s.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if closed(c.Draining()) || closed(s.Draining()) {
			t.Fatal("Draining closed on a fresh session")
		}
		if err := s.GoAway(GoAwayNormal, nil); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c.Draining(), "the peer's GoAway")
		if closed(s.Draining()) {
			t.Error("the GoAway's sender may still open streams, but its Draining closed")
		}
		if _, err := c.Open(ctx); !errors.Is(err, ErrRefused) {
			t.Errorf("Open after the GoAway: %v, want ErrRefused", err)
		}
		// The stream open before the GoAway goes on.
		if _, err := accepted.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(open, buf); err != nil || buf[0] != 'y' {
			t.Fatalf("read on the stream open before the GoAway: %q, %v", buf, err)
		}
	})
	t.Run("last stream id", func(t *testing.T) {
		c, s := pair(t, nil, nil)
		serveEcho(t, s)
		c.mu.Lock()
		c.nextID = maxStreamID // one id left
		c.mu.Unlock()
		ctx := testCtx(t, 10*time.Second)
		last, err := c.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := echoOn(ctx, last, []byte("last"), false); err != nil {
			t.Fatalf("the stream with the last id: %v", err)
		}
		waitClosed(t, c.Draining(), "the last id was given out") // ids are given out as streams are first sent
		last.Close()
	})
	for _, tr := range transports {
		t.Run("Close/"+tr.String(), func(t *testing.T) {
			c, _ := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			if closed(c.Draining()) {
				t.Fatal("Draining closed on a fresh session")
			}
			c.Close()
			waitClosed(t, c.Draining(), "Close")
		})
		t.Run("end/"+tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			s.Kill()
			waitClosed(t, c.Done(), "the peer's end")
			waitClosed(t, c.Draining(), "the session's end")
		})
	}
}
