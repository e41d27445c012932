package mux

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
)

// TestAdmissionControl sets MaxIncomingStreams to 10 on a server that does
// not accept: the client's 11th Open waits and then fails as retry-safe
// ErrRefused, the session never freezes, and once the server takes and
// closes streams, new ones open. On smux, where Ping is not, the same
// holds; a stream opened past the limit all the same (the test hides the
// limit from the client) is refused with a retry-safe ErrRefused.
func TestAdmissionControl(t *testing.T) {
	const limit = 10
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{MaxIncomingStreams: limit}, tr))
			ctx := testCtx(t, 10*time.Second)
			var open []*Stream
			defer func() {
				for _, st := range open {
					st.Close()
				}
			}()
			for i := 0; i < limit; i++ {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatalf("open %d: %v", i, err)
				}
				open = append(open, st)
				if _, err := st.Write([]byte{byte(i)}); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			waitFor(t, "the server to hold 10 streams", func() bool { return s.NumStreams() == limit })

			short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			start := time.Now()
			_, err := c.OpenType(short, TypeDefault)
			cancel()
			if !errors.Is(err, ErrRefused) || !IsRetrySafe(err) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("11th open: got %v, want a retry-safe ErrRefused after the context's deadline", err)
			}
			if d := time.Since(start); d < 90*time.Millisecond {
				t.Fatalf("11th open failed after %v, before its context ended", d)
			}
			if tr == Native {
				if _, err := c.Ping(ctx); err != nil {
					t.Fatalf("Ping with the peer's stream limit reached: %v", err)
				}
				if _, err := s.Ping(ctx); err != nil {
					t.Fatalf("server Ping with its stream limit reached: %v", err)
				}
			} else {
				// As if the client did not know the server's limit: the
				// 11th stream opens, and the server refuses it.
				c.mu.Lock()
				limit := c.peer.maxIncomingStreams
				c.peer.maxIncomingStreams = maxStreamID
				c.mu.Unlock()
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatalf("smux 11th open: %v", err)
				}
				st.Write([]byte{0xff})
				st.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrRefused) || !IsRetrySafe(err) {
					t.Fatalf("smux stream over the limit: read %v, want a retry-safe ErrRefused", err)
				}
				st.Close()
				c.mu.Lock()
				c.peer.maxIncomingStreams = limit
				c.mu.Unlock()
			}
			// The other direction is not limited and keeps working.
			serveEcho(t, c)
			if err := echo(ctx, s, []byte("server to client, limit reached")); err != nil {
				t.Fatal(err)
			}

			// An Open waiting for a slot gets the first one freed.
			waiting := make(chan error, 1)
			go func() {
				for {
					st, err := c.Open(ctx)
					if err == nil {
						err = echoOn(ctx, st, []byte("waited for a slot"), false)
						st.Close()
					}
					// On smux the server counts a stream it closed until
					// its end has left, which this side does not hear of:
					// a stream opened in between is refused, retry-safe,
					// as smuxRefusers says, and is opened again.
					if tr == Smux && IsRetrySafe(err) && ctx.Err() == nil {
						continue
					}
					waiting <- err
					return
				}
			}()
			// The native engine offers streams in the order they arrived;
			// smux admits each in its own goroutine, in any order.
			seen := map[byte]bool{}
			for i := 0; i < limit; i++ {
				st, err := s.Accept(ctx)
				if err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 1)
				if _, err := io.ReadFull(st, b); err != nil || seen[b[0]] || b[0] >= limit || tr == Native && b[0] != byte(i) {
					t.Fatalf("accepted stream %d: read %v, %v", i, b, err)
				}
				seen[b[0]] = true
				st.Close()
			}
			serveEcho(t, s) // from here on the server accepts everything
			if tr == Smux {
				// smux does not tell this side that the server closed its
				// streams: their slots free when this side closes them.
				for _, st := range open {
					st.Close()
				}
			}
			if err := <-waiting; err != nil {
				t.Fatalf("open waiting for a slot: %v", err)
			}
			for i := 0; i < 2*limit; i++ {
				if err := echo(ctx, c, pattern(i, 100)); err != nil {
					t.Fatalf("echo %d after the server freed its slots: %v", i, err)
				}
			}
		})
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAdmissionRawPeer is a peer that ignores the advertised limit of 10
// and opens 20 streams: the 10 over the limit are reset with ResetRefused,
// the first 10 are untouched, and the session stays usable.
func TestAdmissionRawPeer(t *testing.T) {
	const limit = 10
	p, s := rawClientOf(t, &Config{MaxIncomingStreams: limit})
	if p.peer.maxIncomingStreams != limit {
		t.Fatalf("session announced a limit of %d, want %d", p.peer.maxIncomingStreams, limit)
	}
	ctx := testCtx(t, 10*time.Second)
	var frames []byte
	for i := uint32(0); i < 2*limit; i++ {
		frames = append(frames, openFrame(2*i+1, TypeDefault, []byte{byte(i)}, false)...)
	}
	p.send(frames)
	refused := map[uint32]bool{}
	for _, f := range p.pingPong(1) {
		if f.typ != frameReset {
			continue
		}
		if code := binary.BigEndian.Uint32(f.payload); code != ResetRefused {
			t.Errorf("stream %d reset with code %#x, want ResetRefused", f.streamID, code)
		}
		refused[f.streamID] = true
	}
	for i := uint32(0); i < 2*limit; i++ {
		id := 2*i + 1
		if refused[id] != (i >= limit) {
			t.Errorf("stream %d (number %d): refused %v", id, i+1, refused[id])
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("session ended: %v", err)
	}

	// Still at the limit, the next stream is refused too.
	p.send(openFrame(41, TypeDefault, nil, false))
	_, payload := p.until("RESET of stream 41", func(h frameHeader, _ []byte) bool {
		return h.typ == frameReset && h.streamID == 41
	})
	if code := binary.BigEndian.Uint32(payload); code != ResetRefused {
		t.Fatalf("reset code %#x, want ResetRefused", code)
	}

	// The admitted streams hold their data; closing one frees a slot.
	for i := 0; i < limit; i++ {
		st, err := s.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1)
		if _, err := io.ReadFull(st, b); err != nil || b[0] != byte(i) || st.ID() != uint32(2*i+1) {
			t.Fatalf("stream %d: read %v, %v", st.ID(), b, err)
		}
		if i == 0 {
			st.Close()
		} else {
			defer st.Close()
		}
	}
	p.send(openFrame(43, TypeDefault, []byte("in"), true))
	for _, f := range p.pingPong(2) {
		if f.typ == frameReset && f.streamID == 43 {
			t.Fatal("stream 43 refused after a slot was freed")
		}
	}
	st, err := s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.ID() != 43 {
		t.Fatalf("accepted stream %d, want 43", st.ID())
	}
}

// TestStreamsEndedBeforeAccept opens streams that the peer writes to and
// closes before this side accepts them: each is still accepted with all
// its data. On the native transport the peer has forgotten them, and they
// wait in the queue, which holds twice MaxIncomingStreams: a stream past
// that is refused. On smux they count toward MaxIncomingStreams.
func TestStreamsEndedBeforeAccept(t *testing.T) {
	const limit = 5
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{MaxIncomingStreams: limit}, tr))
			ctx := testCtx(t, 10*time.Second)
			queued := limit
			if tr == Native {
				queued = 2 * limit
			}
			for i := 0; i < queued; i++ {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Write(pattern(i, 1000)); err != nil {
					t.Fatal(err)
				}
				st.Close()
			}
			waitFor(t, "the streams to arrive", func() bool { return s.NumStreams() == queued })
			if tr == Native {
				if n := c.NumStreams(); n != 0 {
					t.Fatalf("client still counts %d closed streams", n)
				}
				// The server's queue is full: the client cannot know, so
				// its next stream is refused by the server.
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				st.SetDeadline(time.Now().Add(5 * time.Second))
				st.Write([]byte("over"))
				if _, err := st.Read(make([]byte, 1)); !IsRetrySafe(err) {
					t.Fatalf("stream over the limit: read %v, want a retry-safe error", err)
				}
				st.Close()
			}
			want := map[string]bool{}
			for i := 0; i < queued; i++ {
				want[string(pattern(i, 1000))] = true
			}
			for i := 0; i < queued; i++ {
				st, err := s.Accept(ctx)
				if err != nil {
					t.Fatal(err)
				}
				st.SetDeadline(time.Now().Add(5 * time.Second))
				got, err := io.ReadAll(st)
				if err != nil || !want[string(got)] || tr == Native && string(got) != string(pattern(i, 1000)) {
					t.Fatalf("stream %d: read %d bytes, %v", i, len(got), err)
				}
				delete(want, string(got))
				st.Close()
			}
			waitFor(t, "the slots to free", func() bool { return s.NumStreams() == 0 })
			serveEcho(t, s)
			if err := echo(ctx, c, []byte("after")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFreedSlotReusedAtOnce runs calls one after another against a limit
// of one stream: the client opens its next stream as soon as it has seen
// the previous one end, and the server must already count that slot as
// free, never refusing the new stream.
func TestFreedSlotReusedAtOnce(t *testing.T) {
	const calls = 500
	for _, how := range []string{"Close", "CloseWrite", "Reset"} {
		t.Run(how, func(t *testing.T) {
			c, s := pair(t, nil, &Config{MaxIncomingStreams: 1})
			serve(t, s, TypeDefault, func(st *Stream) {
				st.SetDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, 1)
				if _, err := io.ReadFull(st, b); err != nil {
					return
				}
				switch how {
				case "Close": // ends with END and RESET(cancel): the client never ended
					st.Write(b)
				case "CloseWrite": // the client ended first: END is the last frame
					io.ReadAll(st)
					st.Write(b)
					st.CloseWrite()
				case "Reset":
					st.Reset(0x100)
				}
			})
			ctx := testCtx(t, 20*time.Second)
			for i := 0; i < calls; i++ {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				st.SetDeadline(time.Now().Add(5 * time.Second))
				st.Write([]byte{byte(i)})
				if how == "CloseWrite" {
					st.CloseWrite()
				}
				_, err = io.ReadAll(st)
				st.Close()
				if IsRetrySafe(err) {
					t.Fatalf("call %d refused: %v", i, err)
				}
				if how == "Reset" {
					var re *ResetError
					if !errors.As(err, &re) || re.Code != 0x100 {
						t.Fatalf("call %d: %v, want the server's reset", i, err)
					}
				} else if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
		})
	}
}

// TestPeerEndWhileCloseQueuesFreesSlot has the server answer a stream and
// END it, then Close it while its send path is busy (the test holds it),
// so that Close has ended the stream's directions but not yet queued its
// RESET. The peer, which has read the server's END, ends its own
// direction, which finishes the stream for it, and opens its next stream
// within the limit of one. The server must forget the finished stream on
// the peer's END, as the peer did, and take the new stream, not refuse it.
func TestPeerEndWhileCloseQueuesFreesSlot(t *testing.T) {
	p, s := rawClientOf(t, &Config{MaxIncomingStreams: 1})
	ctx := testCtx(t, 10*time.Second)
	p.send(openFrame(1, TypeDefault, []byte("request"), false))
	st, err := s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteLast([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	p.until("the answer's END", func(h frameHeader, _ []byte) bool {
		return h.typ == frameData && h.streamID == 1 && h.flags&flagEnd != 0
	})

	s.wmu.Lock() // a busy send path: Close cannot queue its RESET yet
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		st.Close()
	}()
	waitFor(t, "Close to end the stream's directions", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.closed
	})
	// For the peer, its END finishes stream 1: it may open stream 3.
	p.send(dataFrame(1, nil, true), openFrame(3, TypeDefault, []byte("next"), true))
	waitFor(t, "the server to read stream 3's opening", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.lastPeerID == 3
	})
	s.wmu.Unlock()
	<-closed

	for _, f := range p.pingPong(1) {
		if f.typ == frameReset && f.streamID == 3 {
			t.Fatalf("stream 3 reset with code %#x: the server still counted stream 1, which the peer had finished", binary.BigEndian.Uint32(f.payload))
		}
	}
	next, err := s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.ID() != 3 {
		t.Fatalf("accepted stream %d, want 3", next.ID())
	}
}
