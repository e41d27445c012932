package mux

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// smuxInitialWindow is the window smux v2 grants every new stream,
// whatever the receiver's buffer (smux frame.go, initialPeerWindow).
const smuxInitialWindow = 256 << 10

// TestNoHeadOfLineFreeze fills the windows of 50 streams whose reader never
// reads, and checks that each writer is blocked after exactly StreamWindow
// bytes (natively; smux at its fixed first window), that the receiving
// session buffers no more than that, and that a ping-pong on another stream
// of the same session still completes promptly while the 50 writers stay
// blocked.
func TestNoHeadOfLineFreeze(t *testing.T) {
	const silent = 50
	const window = 64 << 10
	const silentType StreamType = 7
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			cfg := withTransport(&Config{StreamWindow: window}, tr)
			c, s := pair(t, cfg, cfg)
			ctx := testCtx(t, 20*time.Second)
			serveEcho(t, s)
			var mu sync.Mutex
			var held []*Stream
			serve(t, s, silentType, func(st *Stream) { // accepts, never reads
				mu.Lock()
				held = append(held, st)
				mu.Unlock()
				<-s.Done()
			})

			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)

			src := make([]byte, 1<<20) // shared by all writers, read only
			streams := make([]*Stream, silent)
			for i := range streams {
				st, err := c.OpenType(ctx, silentType)
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				streams[i] = st
			}
			// Phase 1: every writer fills its window, StreamWindow bytes,
			// without waiting, and then cannot write a single byte more.
			// smux grants a fixed 256 KiB first, shrunk to StreamWindow by
			// the receiver's first read (of the stream's type), so there
			// the writer may get up to 256 KiB through.
			errs := make([]error, silent)
			var wg sync.WaitGroup
			for i, st := range streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if n, err := st.Write(src[:window]); err != nil {
						errs[i] = fmt.Errorf("writing the %d bytes of the window: %d written, %w", window, n, err)
						return
					}
					if tr == Smux {
						st.SetWriteDeadline(time.Now().Add(time.Second))
						if n, err := st.Write(src[:smuxInitialWindow]); n > smuxInitialWindow-window || !errors.Is(err, os.ErrDeadlineExceeded) {
							errs[i] = fmt.Errorf("writing beyond the window: %d written, %v", n, err)
							return
						}
					}
					st.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
					n, err := st.Write(src[:1])
					st.SetWriteDeadline(time.Time{})
					if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
						errs[i] = fmt.Errorf("one byte beyond the window: %d written, %v; want os.ErrDeadlineExceeded", n, err)
					}
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("stream %d: %v", i, err)
				}
			}
			// The receiving session holds what was written and no more.
			if tr == Native {
				deadline := time.Now().Add(5 * time.Second)
				for {
					total, n := 0, 0
					mu.Lock()
					for _, st := range held {
						st.mu.Lock()
						total += len(st.rbuf) - st.roff
						st.mu.Unlock()
						n++
					}
					s.mu.Lock()
					for _, st := range s.pending {
						st.mu.Lock()
						total += len(st.rbuf) - st.roff
						st.mu.Unlock()
						n++
					}
					s.mu.Unlock()
					mu.Unlock()
					if total == silent*window && n == silent {
						break
					}
					if total > silent*window || time.Now().After(deadline) {
						t.Fatalf("server buffers %d bytes in %d streams, want %d = 50 x StreamWindow", total, n, silent*window)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			// Both sessions live in this process: the sender's frames, the
			// receiver's buffers (which may have twice the room they use),
			// and slack for the runtime and the race detector.
			limit := uint64(silent*max(window, smuxInitialWindow)*4 + 32<<20)
			if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > int64(limit) {
				t.Errorf("heap in use grew by %d bytes with %d blocked streams, limit %d", grown, silent, limit)
			}

			// Phase 2: the writers keep trying, blocked, while another
			// stream of the session plays ping-pong.
			var blocked sync.WaitGroup
			t.Cleanup(func() { c.Kill(); blocked.Wait() })
			for _, st := range streams {
				blocked.Add(1)
				go func() {
					defer blocked.Done()
					st.Write(src)
				}()
			}
			start := time.Now()
			pp, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer pp.Close()
			pp.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			for i := 0; i < 100; i++ {
				msg := pattern(i, 64)
				if _, err := pp.Write(msg); err != nil {
					t.Fatalf("ping-pong %d: write: %v", i, err)
				}
				if _, err := io.ReadFull(pp, buf); err != nil {
					t.Fatalf("ping-pong %d: read: %v", i, err)
				}
				if !bytes.Equal(buf, msg) {
					t.Fatalf("ping-pong %d: wrong echo", i)
				}
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("100 round trips beside %d blocked streams took %v", silent, d)
			}
			if tr == Native {
				if _, err := c.Ping(ctx); err != nil {
					t.Fatalf("Ping beside blocked streams: %v", err)
				}
				if _, err := s.Ping(ctx); err != nil {
					t.Fatalf("server Ping beside blocked streams: %v", err)
				}
			}
			if err := echo(ctx, c, pattern(1, 3*window)); err != nil {
				t.Fatalf("echo of 3 windows beside blocked streams: %v", err)
			}
		})
	}
}

// TestFlowControlBulk moves several MiB in both directions of one stream
// at once through the smallest window, so that every byte rides on window
// updates.
func TestFlowControlBulk(t *testing.T) {
	const size = 4 << 20
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			cfg := withTransport(&Config{StreamWindow: minStreamWindow, MaxFrameSize: minFrameSize}, tr)
			c, s := pair(t, cfg, cfg)
			serveEcho(t, s)
			ctx := testCtx(t, 30*time.Second)
			if err := echo(ctx, c, pattern(3, size)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDroppedStreamsStayOpen drops streams without closing them, on both
// sides, runs the garbage collector, and checks that the peer can still
// read what was written and keep writing: a stream is never closed behind
// the application's back (smux sets a finalizer that would).
func TestDroppedStreamsStayOpen(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ctx := testCtx(t, 10*time.Second)
			msg := []byte("written before the drop")

			// The client opens, writes and drops; the server keeps its end.
			func() {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Write(msg); err != nil {
					t.Fatal(err)
				}
			}()
			kept, err := s.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer kept.Close()

			// The server accepts, writes and drops; the client keeps its end.
			keptClient := func() *Stream {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Write([]byte("open")); err != nil { // carries the open
					t.Fatal(err)
				}
				acc, err := s.Accept(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := acc.Write(msg); err != nil {
					t.Fatal(err)
				}
				return st
			}()
			defer keptClient.Close()

			for range 5 {
				runtime.GC()
				time.Sleep(10 * time.Millisecond) // let finalizers run
			}

			for name, st := range map[string]*Stream{"server end of a client-dropped stream": kept, "client end of a server-dropped stream": keptClient} {
				st.SetDeadline(time.Now().Add(5 * time.Second))
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(st, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("%s: read %q, %v", name, got, err)
				}
				if _, err := st.Write(pattern(1, 1000)); err != nil {
					t.Fatalf("%s: write: %v", name, err)
				}
				st.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if n, err := st.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("%s: the dropped end was closed: read %d bytes, %v", name, n, err)
				}
			}
		})
	}
}
