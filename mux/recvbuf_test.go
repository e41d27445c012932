package mux

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestRecvBufClasses checks the receive buffer pools' classes: a buffer
// holds what it was asked for, comes back from the pool of the largest
// class it can serve, and one past the largest class is never pooled, so
// that a pool pins no more than maxRecvBufClass per buffer.
func TestRecvBufClasses(t *testing.T) {
	for _, n := range []int{0, 1, 1 << minRecvBufClass, 1<<minRecvBufClass + 1, 300 << 10, 1 << maxRecvBufClass, 1<<maxRecvBufClass + 1} {
		bp := getRecvBuf(n)
		if len(*bp) != 0 || cap(*bp) < n {
			t.Errorf("getRecvBuf(%d): len %d cap %d", n, len(*bp), cap(*bp))
		}
		putRecvBuf(bp)
	}
	huge := make([]byte, 0, 2<<maxRecvBufClass)
	putRecvBuf(&huge)
	for range 100 {
		if bp := getRecvBuf(1 << maxRecvBufClass); cap(*bp) > 1<<(maxRecvBufClass+1)-1 {
			t.Fatalf("the largest class served a buffer of %d bytes", cap(*bp))
		}
	}
}

// TestRecvBuffersRecycledIntact runs many concurrent echoes of sizes that
// make the receive buffers grow through every class and go back to the
// pools, on both sides, and checks every byte: a buffer pooled while a
// stream still reads from it, or handed to two streams, shows as a
// corrupted echo (or to the race detector).
func TestRecvBuffersRecycledIntact(t *testing.T) {
	sizes := []int{1, 1000, 1 << 10, 5000, 64<<10 + 1, 200 << 10, 1<<20 + 3}
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			serveEcho(t, s)
			ctx := testCtx(t, 60*time.Second)
			var wg sync.WaitGroup
			errs := make(chan error, 8*len(sizes))
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i, n := range sizes {
						if err := echo(ctx, c, pattern(g*len(sizes)+i, n)); err != nil {
							errs <- fmt.Errorf("echo of %d bytes: %w", n, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestDrainedStreamHoldsNoBuffer checks that a stream whose input has all
// been read gives its receive buffer back, so that a session of many
// streams waiting for input holds no buffer for them, and that input
// arriving later is read intact.
func TestDrainedStreamHoldsNoBuffer(t *testing.T) {
	cs, ss := pair(t, nil, nil)
	ctx := testCtx(t, 10*time.Second)
	out, err := cs.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	holds := func(st *Stream) bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.rbox != nil
	}
	msg := bytes.Repeat([]byte("0123456789abcdef"), 64)
	var in *Stream
	for round := range 3 {
		if _, err := out.Write(msg); err != nil {
			t.Fatal(err)
		}
		if in == nil {
			if in, err = ss.Accept(ctx); err != nil {
				t.Fatal(err)
			}
			defer in.Close()
		}
		got := make([]byte, len(msg))
		if err := readFullStream(in, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d: read %d bytes, %v; want the %d written", round, len(got), err, len(msg))
		}
		if holds(in) {
			t.Fatalf("round %d: the drained stream still holds its receive buffer", round)
		}
	}
}
