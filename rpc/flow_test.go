package rpc

import (
	"errors"
	"fmt"
	"io"
	"strings"
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
