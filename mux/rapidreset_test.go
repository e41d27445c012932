package mux

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gauge counts handlers running at once and remembers the most.
type gauge struct {
	now, peak atomic.Int32
}

func (g *gauge) enter() {
	n := g.now.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (g *gauge) leave() { g.now.Add(-1) }

// TestRapidResetCannotExceedHandlerLimit is a raw peer that opens streams
// with END and resets each at once, 300 times, against MaxIncomingStreams
// 4: the streams' handlers, which outlive the resets, never run more than
// 4 at once, NumStreams counts them while they run, and past the 4 held
// and 8 queued streams the session refuses them.
func TestRapidResetCannotExceedHandlerLimit(t *testing.T) {
	const limit, streams = 4, 300
	p, s := rawClientOf(t, &Config{MaxIncomingStreams: limit})
	var g gauge
	var handled atomic.Int32
	var maxStreams atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	s.HandleType(TypeDefault, func(st *Stream) {
		wg.Add(1)
		defer wg.Done()
		g.enter()
		defer g.leave()
		handled.Add(1)
		if n := int32(s.NumStreams()); n > maxStreams.Load() {
			maxStreams.Store(n)
		}
		select { // the work a reset does not stop
		case <-release:
		case <-time.After(5 * time.Second):
		}
		st.Close()
	})
	for i := range streams {
		id := uint32(2*i + 1)
		p.send(openFrame(id, TypeDefault, []byte("x"), true), resetFrame(id, ResetCancel))
	}
	refused := 0
	p.until("the refusals", func(h frameHeader, payload []byte) bool {
		if h.typ == frameReset && string(payload) == string(word(ResetRefused)) {
			refused++
		}
		return refused == streams-3*limit // limit held, twice as many queued
	})
	waitFor(t, "the handlers to start", func() bool { return handled.Load() == limit })
	if n := s.NumStreams(); n < limit {
		t.Errorf("NumStreams = %d while %d handlers run", n, limit)
	}
	close(release)
	waitFor(t, "the queued streams' handlers", func() bool { return handled.Load() == 3*limit })
	wg.Wait()
	if peak := g.peak.Load(); peak > limit {
		t.Fatalf("%d handlers ran at once, limit %d", peak, limit)
	}
	waitFor(t, "the slots to free", func() bool { return s.NumStreams() == 0 })
	p.pingPong(7) // the session is fine
}

// TestOpenResetCannotExceedHandlerLimit does what a rapid-reset attacker
// can do with the public API, on both transports: open, write the request
// and end it in one frame, then reset (on smux: close) at once, 100 times.
// The handlers never run more than MaxIncomingStreams at once.
func TestOpenResetCannotExceedHandlerLimit(t *testing.T) {
	const limit, calls = 4, 100
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{MaxIncomingStreams: limit}, tr))
			var g gauge
			var wg sync.WaitGroup
			s.HandleType(TypeDefault, func(st *Stream) {
				wg.Add(1)
				defer wg.Done()
				g.enter()
				defer g.leave()
				time.Sleep(20 * time.Millisecond) // work that ignores the reset
				st.Close()
			})
			ctx := testCtx(t, 20*time.Second)
			for i := range calls {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatalf("open %d: %v", i, err)
				}
				// Past the limit a refusal is what the opener should get; on
				// smux, past the refusals the session waits to send, a close.
				_, err = st.WriteLast([]byte("request"))
				if err != nil && !IsRetrySafe(err) && !(tr == Smux && errors.Is(err, io.EOF)) {
					t.Fatalf("write %d: %v", i, err)
				}
				if tr == Smux {
					st.Close()
				} else {
					st.Reset(0x100)
				}
			}
			time.Sleep(100 * time.Millisecond)
			waitFor(t, "the handlers to finish", func() bool { return g.now.Load() == 0 })
			wg.Wait()
			if peak := g.peak.Load(); peak > limit {
				t.Fatalf("%d handlers ran at once, limit %d", peak, limit)
			}
		})
	}
}

// TestAcceptWaitsWhileApplicationHoldsLimit holds MaxIncomingStreams
// accepted streams whose peer has reset them: Accept does not hand out
// another until one of them is closed.
func TestAcceptWaitsWhileApplicationHoldsLimit(t *testing.T) {
	const limit = 2
	c, s := pair(t, nil, &Config{MaxIncomingStreams: limit})
	ctx := testCtx(t, 10*time.Second)
	var held []*Stream
	for range limit + 1 {
		st, err := c.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.WriteLast([]byte("x"))
		if len(held) < limit {
			peer, err := s.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, peer)
		}
		st.Reset(0x100)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if st, err := s.Accept(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Accept while the application holds %d streams: got %v, %v", limit, st, err)
	}
	held[0].Close()
	st, err := s.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept after a Close: %v", err)
	}
	st.Close()
	held[1].Close()
}

// TestCloseSendsEndAndResetTogether closes streams whose peer has not
// finished, while another opener waits for the only slot: the waiting
// stream's opening frame never comes between the closed stream's END and
// its RESET, so the peer, which counts the closed stream until its RESET,
// never refuses the new one. Each round waits for the server to take the
// new stream, so that its queue of streams never fills.
func TestCloseSendsEndAndResetTogether(t *testing.T) {
	const rounds = 300
	c, s := pair(t, nil, &Config{MaxIncomingStreams: 1})
	started := make(chan struct{}, rounds)
	serve(t, s, TypeDefault, func(st *Stream) {
		started <- struct{}{}
		io.Copy(io.Discard, st) // never ends its direction first
	})
	ctx := testCtx(t, 30*time.Second)
	refused := func(st *Stream) bool { // the peer refused it with RESET(REFUSED)
		st.mu.Lock()
		defer st.mu.Unlock()
		return IsRetrySafe(st.recvErr)
	}
	prev, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	prev.Write([]byte("0"))
	for i := 1; i < rounds; i++ {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the server never took the stream (refused: %v)", i, refused(prev))
		}
		next := make(chan *Stream, 1)
		go func() {
			st, err := c.Open(ctx) // waits for prev's slot
			if err != nil {
				t.Error(err)
			} else {
				st.Write([]byte("1"))
			}
			next <- st
		}()
		time.Sleep(time.Duration(i%3) * 10 * time.Microsecond)
		prev.Close()
		if prev = <-next; prev == nil {
			t.FailNow()
		}
	}
	<-started
	prev.Close()
}

// TestOpenersGetSlotsInOrder queues openers at the peer's limit of one
// stream, one after another: freed slots go to them in the order they
// came.
func TestOpenersGetSlotsInOrder(t *testing.T) {
	const openers = 20
	c, s := pair(t, nil, &Config{MaxIncomingStreams: 1})
	serve(t, s, TypeDefault, func(st *Stream) { io.Copy(io.Discard, st) })
	ctx := testCtx(t, 10*time.Second)
	first, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, openers)
	streams := make(chan *Stream, openers)
	for i := range openers {
		go func() {
			st, err := c.Open(ctx)
			if err != nil {
				t.Error(err)
				got <- -1
				return
			}
			got <- i
			streams <- st
		}()
		waitFor(t, "the opener to wait", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return len(c.slotWaiters) == i+1
		})
	}
	first.Close()
	for want := range openers {
		if i := <-got; i != want {
			t.Fatalf("opener %d got the slot before opener %d", i, want)
		}
		(<-streams).Close()
	}
}
