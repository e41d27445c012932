package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	flowWindow  = 64 << 10 // the stream window both sides announce
	flowMsgSize = 1 << 10  // bytes of each message's value
	flowTotal   = 400      // messages each test sends: 400 KiB, six windows
	flowSlack   = 4        // messages beyond a window's worth we tolerate

	// smuxFirstWindow is the window smux gives every new stream, whatever
	// the receiver's configuration.
	smuxFirstWindow = 256 << 10
)

// flowMsg is message i: its index, then padding to flowMsgSize.
func flowMsg(i int) *wrapperspb.StringValue {
	v := fmt.Sprintf("%06d", i)
	return wrapperspb.String(v + strings.Repeat("x", flowMsgSize-len(v)))
}

// settled waits until n has not changed for 500 ms and returns it.
func settled(t *testing.T, n *atomic.Int64) int64 {
	t.Helper()
	last, since := n.Load(), time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for time.Since(since) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("the count never settled (now %d)", n.Load())
		}
		time.Sleep(10 * time.Millisecond)
		if v := n.Load(); v != last {
			last, since = v, time.Now()
		}
	}
	return last
}

// TestSlowConsumerBlocksSender has a server-streaming handler send 400 KiB
// to a client that does not read: the handler's Send blocks once the
// stream window (64 KiB, MuxConfig) is full, so the sender holds no more
// than a window; when the client reads, every message arrives, in order.
//
// On the Smux transport the bound is smux's own: a smux sender starts
// every stream with a fixed 256 KiB window, and the receiver announces its
// own, Config.StreamWindow, only at its application's first Read of the
// stream, which a client that never reads never makes (mux.Smux says so).
func TestSlowConsumerBlocksSender(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		var sent atomic.Int64
		srv := NewServer(MuxConfig(&mux.Config{Transport: tr, StreamWindow: flowWindow}))
		srv.RegisterService(&echoDesc, &funcEcho{serverStream: func(_ *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
			for i := range flowTotal {
				if err := s.Send(flowMsg(i)); err != nil {
					return err
				}
				sent.Add(1)
			}
			return nil
		}})
		p := dial(t, serve(t, srv), MuxConfig(&mux.Config{Transport: tr, StreamWindow: flowWindow}))

		s, err := echoClient{p}.ServerStream(ctx, wrapperspb.String("go"))
		if err != nil {
			t.Fatal(err)
		}
		n := settled(t, &sent)
		window := flowWindow
		if tr == mux.Smux {
			window = smuxFirstWindow
		}
		limit := int64(window/flowMsgSize + flowSlack)
		t.Logf("the handler sent %d messages of %d bytes, then blocked (window %d bytes)", n, flowMsgSize, window)
		if n > limit {
			t.Errorf("the handler sent %d messages to a client that does not read; a %d-byte window allows %d", n, window, limit)
		}
		if n == 0 {
			t.Errorf("the handler sent nothing")
		}
		for i := range flowTotal {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if want := fmt.Sprintf("%06d", i); !strings.HasPrefix(m.Value, want) || len(m.Value) != flowMsgSize {
				t.Fatalf("message %d: got %.6q (%d bytes)", i, m.Value, len(m.Value))
			}
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last message: got %v, want io.EOF", err)
		}
		if sent.Load() != flowTotal {
			t.Fatalf("the handler sent %d, want %d", sent.Load(), flowTotal)
		}
	})
}

// TestSlowHandlerBlocksCaller is the other direction: a client-streaming
// caller sends 400 KiB to a handler that has read one request and then
// reads no more for a while; the caller's Send blocks once the window is
// full, and all requests arrive once the handler reads.
func TestSlowHandlerBlocksCaller(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		started, release := make(chan struct{}, 1), make(chan struct{})
		srv := NewServer(MuxConfig(&mux.Config{Transport: tr, StreamWindow: flowWindow}))
		srv.RegisterService(&echoDesc, &funcEcho{clientStream: func(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			if _, err := s.Recv(); err != nil {
				return err
			}
			started <- struct{}{}
			select {
			case <-release:
			case <-s.Context().Done():
				return s.Context().Err()
			}
			for i := 1; ; i++ {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					return s.SendAndClose(wrapperspb.String(fmt.Sprint(i)))
				}
				if err != nil {
					return err
				}
				if want := fmt.Sprintf("%06d", i); !strings.HasPrefix(m.Value, want) {
					return fmt.Errorf("request %d: got %.6q", i, m.Value)
				}
			}
		}})
		p := dial(t, serve(t, srv), MuxConfig(&mux.Config{Transport: tr, StreamWindow: flowWindow}))

		s, err := echoClient{p}.ClientStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Flood once the handler has read a first request, and one more
		// call has made a round trip: on smux, a receiver announces its
		// window only when it first reads the stream (see
		// TestSlowConsumerBlocksSender), and until the announcement arrives
		// the sender may send 256 KiB; the round trip's answer follows the
		// announcement on the connection.
		if err := s.Send(flowMsg(0)); err != nil {
			t.Fatal(err)
		}
		await(t, started, 5*time.Second, "the handler to start")
		checkEcho(t, ctx, p, "server")
		var sent atomic.Int64
		sending := async(func() error {
			for i := 1; i < flowTotal; i++ {
				if err := s.Send(flowMsg(i)); err != nil {
					return fmt.Errorf("request %d: %w", i, err)
				}
				sent.Add(1)
			}
			return nil
		})
		n := settled(t, &sent)
		limit := int64(flowWindow/flowMsgSize + flowSlack)
		t.Logf("the caller sent %d messages, then blocked", n)
		if n > limit {
			t.Errorf("the caller sent %d messages to a handler that does not read; a %d-byte window allows %d", n, flowWindow, limit)
		}
		close(release)
		if err := await(t, sending, 10*time.Second, "the caller's sends"); err != nil {
			t.Fatal(err)
		}
		out, err := s.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if out.Value != fmt.Sprint(flowTotal) {
			t.Fatalf("the handler read %s requests, want %d", out.Value, flowTotal)
		}
	})
}

// slowConsumer is one way a receiver can stop reading a call's stream.
type slowConsumer struct {
	name         string
	callback     bool // the server calls the client's services
	serverStream bool // the callee sends to a caller that does not read; else the caller to a callee that does not read
}

var slowConsumers = []slowConsumer{
	{"server stream to a caller that does not read", false, true},
	{"client stream to a handler that does not read", false, false},
	{"callback server stream to a server that does not read", true, true},
	{"callback client stream to a client handler that does not read", true, false},
}

// TestSlowConsumersHoldAWindowEachAndDelayNoOtherCall stalls 32 calls at
// once on one session, in each direction a stream can flow (a server
// stream whose caller does not read, a client stream whose handler does
// not read, and both again with the server calling the client's
// services), with a stream window of 64 KiB: every sender ends up blocked
// in Send, having sent no more than a window's worth (on smux, its first
// window of 256 KiB, see TestSlowConsumerBlocksSender); the live heap
// held stays within two windows per stalled call plus 4 MiB, the heap in
// use within twice that; and unary
// calls in the same direction, on the same session, keep their
// latency within 10 times the undisturbed figure (or the floors of
// pressure_test.go). Once the stalled calls are cancelled, every sender
// returns.
func TestSlowConsumersHoldAWindowEachAndDelayNoOtherCall(t *testing.T) {
	const stalled = 32
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, sc := range slowConsumers {
			t.Run(sc.name, func(t *testing.T) {
				window := flowWindow
				if tr == mux.Smux {
					window = smuxFirstWindow
				}
				var sent [stalled]atomic.Int64
				var total, inSend atomic.Int64
				send := func(i int, f func(*wrapperspb.StringValue) error) error {
					for n := 0; ; n++ {
						inSend.Add(1)
						err := f(flowMsg(n))
						inSend.Add(-1)
						if err != nil {
							return err
						}
						sent[i].Add(1)
						total.Add(1)
					}
				}
				stalling := &funcEcho{
					serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
						i, err := strconv.Atoi(in.Value)
						if err != nil {
							return err
						}
						return send(i, s.Send)
					},
					clientStream: func(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
						if _, err := s.Recv(); err != nil {
							return err
						}
						<-s.Context().Done()
						return s.Context().Err()
					},
				}
				cfg := MuxConfig(&mux.Config{Transport: tr, StreamWindow: flowWindow})
				srv, callbacks := NewServer(cfg), NewServer(cfg)
				if sc.callback {
					srv.RegisterService(&echoDesc, defaultEcho)
					callbacks.RegisterService(&echoDesc, stalling)
				} else {
					srv.RegisterService(&echoDesc, stalling)
					callbacks.RegisterService(&echoDesc, defaultEcho)
				}
				caller := dial(t, serve(t, srv), cfg, WithServices(callbacks))
				if sc.callback {
					caller = onlyPeer(t, srv)
				}
				v := echoVictim(t, caller, 200)
				u := sampleUsage()

				ctx, cancel := context.WithCancel(testCtx(t, 60*time.Second))
				defer cancel()
				var senders sync.WaitGroup
				for i := range stalled {
					if sc.serverStream {
						// The stream is never read: the handler's Sends fill it.
						if _, err := (echoClient{caller}).ServerStream(ctx, wrapperspb.String(strconv.Itoa(i))); err != nil {
							t.Fatal(err)
						}
						continue
					}
					s, err := echoClient{caller}.ClientStream(ctx)
					if err != nil {
						t.Fatal(err)
					}
					senders.Go(func() { send(i, s.Send) })
				}
				n := settled(t, &total)
				var held int64
				attacked := during(func() {
					time.Sleep(500 * time.Millisecond)
					held = liveHeapNow() - u.baseLive
					time.Sleep(500 * time.Millisecond)
				}, 100, v)
				most := int64(0)
				for i := range sent {
					most = max(most, sent[i].Load())
				}
				t.Logf("%d stalled calls sent %d messages of %d bytes, at most %d on one (window %d bytes), and hold %.1f MiB of live heap",
					stalled, n, flowMsgSize, most, window, mib(held))
				// Live: what the receivers buffer, a window per call, twice
				// over for the growth of buffers (smux keeps each frame in a
				// buffer of the next power of two); in use: garbage too.
				liveBound := int64(stalled)*2*int64(window) + 4<<20
				u.check(t, "stalled calls", 2*stalled+48, 2*liveBound)
				v.check(attacked[0])
				if limit := int64(window/flowMsgSize + flowSlack); most > limit {
					t.Errorf("a sender sent %d messages to a receiver that does not read; a %d-byte window allows %d", most, window, limit)
				}
				if held > liveBound {
					t.Errorf("the stalled calls hold %.1f MiB of live heap, bound %.1f MiB", mib(held), mib(liveBound))
				}
				if b := inSend.Load(); b != stalled {
					t.Errorf("%d of %d senders are blocked in Send", b, stalled)
				}
				if total.Load() != n {
					t.Errorf("the senders went on sending while the victim called: %d messages, then %d", n, total.Load())
				}
				cancel()
				senders.Wait()
				eventually(t, 10*time.Second, "the stalled senders to return", func() bool { return inSend.Load() == 0 })
			})
		}
	})
}
