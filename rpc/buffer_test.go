package rpc

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestBufClasses checks the buffer pools' classes: a buffer holds what it
// was asked for, and one past the largest class is never pooled, so that
// a pool pins no more than maxBufClass per buffer.
func TestBufClasses(t *testing.T) {
	for _, n := range []int{0, 1, 1 << minBufClass, 1<<minBufClass + 1, 300 << 10, 1 << maxBufClass, 1<<maxBufClass + 1} {
		bp := getBuf(n)
		if len(*bp) != 0 || cap(*bp) < n {
			t.Errorf("getBuf(%d): len %d cap %d", n, len(*bp), cap(*bp))
		}
		putBuf(bp)
		if bp := pooledBuf(n); bp != nil && (len(*bp) != 0 || cap(*bp) < n) {
			t.Errorf("pooledBuf(%d): len %d cap %d", n, len(*bp), cap(*bp))
		}
	}
	huge := make([]byte, 0, 2<<maxBufClass)
	putBuf(&huge)
	for range 100 {
		if bp := pooledBuf(1 << maxBufClass); bp != nil && cap(*bp) >= 2<<maxBufClass {
			t.Fatalf("the largest class served a buffer of %d bytes", cap(*bp))
		}
	}
	if bp := pooledBuf(1<<maxBufClass + 1); bp != nil {
		t.Errorf("pooledBuf served %d bytes past the largest class", cap(*bp))
	}
}

// TestPooledBufNeverAllocates: the size a peer announces may only take a
// buffer that exists already.
func TestPooledBufNeverAllocates(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		if bp := pooledBuf(4 << 20); bp != nil {
			putBuf(bp)
		}
	}); n != 0 {
		t.Errorf("pooledBuf allocated %v times a run", n)
	}
}

// TestGrowBufKeepsBytes checks that a buffer moved to a larger class keeps
// its bytes, and that the buffer it leaves goes back to the pool only
// once it is no longer used.
func TestGrowBufKeepsBytes(t *testing.T) {
	bp := getBuf(10)
	b := append((*bp)[:0], "0123456789"...)
	bp, b = growBuf(bp, b, 1<<minBufClass)
	if string(b) != "0123456789" || cap(b)-len(b) < 1<<minBufClass || &(*bp)[:1][0] != &b[:1][0] {
		t.Fatalf("grown: %q, room %d, box of another buffer: %v", b, cap(b)-len(b), &(*bp)[:1][0] != &b[:1][0])
	}
	same, b2 := growBuf(bp, b, cap(b)-len(b))
	if same != bp || &b2[0] != &b[0] {
		t.Error("growBuf moved a buffer that had room")
	}
	putBuf(bp)
}

// TestMessagesOfEverySizeClassStayIntact runs concurrent unary and
// streaming echoes whose messages span the buffer classes, on both
// transports, and checks every byte that comes back: a pooled buffer
// reused while a call still reads or writes from it shows as a corrupted
// echo (or to the race detector). One handler keeps receiving after the
// end of the caller's messages, and one sends a second message where the
// unary request's end part belongs.
func TestMessagesOfEverySizeClassStayIntact(t *testing.T) {
	sizes := []int{0, 1, 1000, 1 << 10, 5000, 64<<10 + 1, 300 << 10, 1<<20 + 3}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 60*time.Second)
		echo := &funcEcho{unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			return in, nil
		}, bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			for {
				in, err := s.Recv()
				if err != nil {
					return nil // io.EOF, or the call has ended
				}
				if err := s.Send(in); err != nil {
					return err
				}
			}
		}}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, echo)
		p := dial(t, serve(t, srv), muxOpt(tr))
		c := echoClient{p}
		var wg sync.WaitGroup
		errs := make(chan error, 8*len(sizes)+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, n := range sizes[1:] {
				first, _ := appendMessage(nil, wrapperspb.String(fill(i, n)), 4<<20)
				second, _ := appendMessage(nil, wrapperspb.String(fill(i+1, 1<<20)), 4<<20)
				wire := rawParts(appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, ""), first, second, appendEmptyPart(nil, partClientEnd))
				a, err := readAnswer(openCall(t, ctx, p, wire, true))
				if err != nil || status.Code(a.status) != codes.InvalidArgument {
					errs <- fmt.Errorf("a unary call with a second request of %d bytes: %v, %v", n, err, a.status)
					return
				}
			}
		}()
		for g := range 4 {
			wg.Add(2)
			go func() {
				defer wg.Done()
				for i, n := range sizes {
					want := fill(g*len(sizes)+i, n)
					out, err := c.Unary(ctx, wrapperspb.String(want))
					if err != nil || out.Value != want {
						errs <- fmt.Errorf("unary echo of %d bytes: %v (%d bytes back, intact: %v)", n, err, len(out.GetValue()), out.GetValue() == want)
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				s, err := c.Bidi(ctx)
				if err != nil {
					errs <- err
					return
				}
				for i, n := range sizes {
					want := fill(-g*len(sizes)-i, n)
					if err := s.Send(wrapperspb.String(want)); err != nil {
						errs <- fmt.Errorf("send: %w", err)
						return
					}
					out, err := s.Recv()
					if err != nil || out.Value != want {
						errs <- fmt.Errorf("streamed echo of %d bytes: %v (%d bytes back, intact: %v)", n, err, len(out.GetValue()), out.GetValue() == want)
						return
					}
				}
				s.CloseSend()
				if _, err := s.Recv(); err == nil {
					errs <- fmt.Errorf("a message after the end of the requests")
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

// fill returns a string of n bytes that depend on seed, so that a byte
// from another message or offset is noticed.
func fill(seed, n int) string {
	var b strings.Builder
	b.Grow(n)
	x := uint32(seed)*2654435761 + 1
	for range n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteByte('a' + byte(x%26))
	}
	return b.String()
}

// TestPayloadGrowthFollowsTheBytes checks the rule a payload buffer grows
// by, toward a payload of any announced size: never by more than what has
// been read (or minPayloadGrowth), always by something, and up to whole
// size classes where the rule allows.
func TestPayloadGrowthFollowsTheBytes(t *testing.T) {
	for _, n := range []int{1, 4 << 10, 10000, 1 << 20, 1<<20 + 5, 64 << 20} {
		for read := minPayloadGrowth; read < n; {
			g := payloadGrowth(read, n)
			if g < 1 || g > max(read, minPayloadGrowth) {
				t.Fatalf("payloadGrowth(%d, %d) = %d", read, n, g)
			}
			if c := read + g; c < n && c != classCap(c) {
				t.Errorf("payloadGrowth(%d, %d) grows to %d, not a whole class", read, n, c)
			}
			read += g
		}
	}
}

// TestStreamWaitingForMessagesHoldsNoBuffer checks that a streaming
// caller that has received its messages holds no payload buffer while it
// waits for the next, so that many open streams cost no buffers.
func TestStreamWaitingForMessagesHoldsNoBuffer(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "s"})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		ctx := testCtx(t, 10*time.Second)
		bidi, err := c.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs := bidi.(*GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]).ClientStream.(*clientStream)
		for i := range 3 {
			msg := strings.Repeat("x", 1000*(i+1))
			if err := bidi.Send(wrapperspb.String(msg)); err != nil {
				t.Fatal(err)
			}
			got, err := bidi.Recv()
			if err != nil || got.Value != "s:"+msg {
				t.Fatalf("message %d: %d bytes, %v", i, len(got.GetValue()), err)
			}
			cs.rmu.Lock()
			held := cs.r.box != nil
			cs.rmu.Unlock()
			if held {
				t.Fatalf("after message %d the stream still holds its payload buffer", i)
			}
		}
		bidi.CloseSend()
		if _, err := bidi.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v, want io.EOF", err)
		}
	})
}
