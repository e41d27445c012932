package rpc

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestServerVanishesMidCall kills the server's sessions (Server.Stop)
// while calls of every kind are blocked in its handlers: every call fails
// within 2 s with Unavailable (for which errors.Is(err, io.EOF) does not
// hold), every handler's context ends, and a new call fails at once,
// Unavailable and retry-safe.
func TestServerVanishesMidCall(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		w := newWaiter()
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, w)
		p := dial(t, serve(t, srv), muxOpt(tr))

		var errcs []<-chan error
		var names []string
		for i := range 2 {
			for _, kind := range callKinds {
				errcs = append(errcs, async(func() error { return blockedCall(ctx, p, kind) }))
				names = append(names, fmt.Sprint(kind, i))
			}
		}
		for range errcs {
			await(t, w.started, 5*time.Second, "a handler to start")
		}
		killed := time.Now()
		stopped := async(func() error { srv.Stop(); return nil })
		for i, errc := range errcs {
			err := await(t, errc, 5*time.Second, names[i]+" to fail")
			if lag := time.Since(killed); lag > 2*time.Second {
				t.Errorf("%s failed %v after the server vanished", names[i], lag)
			}
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s: got %v, want Unavailable", names[i], err)
			}
			// A Recv loop that stops at errors.Is(err, io.EOF) must not take
			// the lost connection for the stream's normal end.
			if errors.Is(err, io.EOF) {
				t.Errorf("%s: errors.Is(%v, io.EOF) holds", names[i], err)
			}
		}
		t.Logf("all %d calls failed within %v", len(errcs), time.Since(killed))
		await(t, stopped, 5*time.Second, "Stop to return")
		for range errcs {
			if e := await(t, w.ended, 5*time.Second, "a handler's context to end"); e.err == nil {
				t.Errorf("%s: the handler's context never ended", e.method)
			}
		}
		await(t, p.Done(), 5*time.Second, "the client to see its session end")
		_, err := echoClient{p}.Unary(ctx, wrapperspb.String("x"))
		if status.Code(err) != codes.Unavailable || !IsRetrySafe(err) {
			t.Fatalf("a call after the session ended: got %v (retry-safe %v), want Unavailable and retry-safe", err, IsRetrySafe(err))
		}
	})
}

// TestClientVanishesDuringCallback kills the client's session while the
// server's handlers are blocked in calls back to the client: the server's
// calls back fail within 2 s with Unavailable, so do the client's own
// calls, the client's callback handlers' contexts end, and the server
// forgets the peer.
func TestClientVanishesDuringCallback(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		r, w := newRelay(), newWaiter()
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, r)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, w)
		p := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		onlyPeer(t, srv)

		kinds := []string{"unary", "serverStream", "unary", "serverStream"}
		var errcs []<-chan error
		for _, kind := range kinds {
			errcs = append(errcs, async(func() error { return blockedCall(ctx, p, kind) }))
		}
		for range kinds {
			await(t, w.started, 5*time.Second, "a callback's handler to start")
		}
		killed := time.Now()
		p.Session().Kill()
		for range kinds {
			err := await(t, r.backErr, 5*time.Second, "the server's call back to fail")
			if lag := time.Since(killed); lag > 2*time.Second {
				t.Errorf("the server's call back failed %v after the client vanished", lag)
			}
			// On smux a stream's reader learns of a lost connection as a
			// plain io.EOF, the same as the peer closing the stream, and may
			// do so before the session records its end: the relay's handler
			// can then take its caller's stream as closed, a cancellation,
			// and cancel its call back with its context.
			if code := status.Code(err); code != codes.Unavailable && !(tr == mux.Smux && code == codes.Canceled) {
				t.Errorf("the server's call back: got %v, want Unavailable", err)
			}
		}
		for i, errc := range errcs {
			err := await(t, errc, 5*time.Second, "the client's call to fail")
			if lag := time.Since(killed); lag > 2*time.Second {
				t.Errorf("%s: the client's call failed %v after its session was killed", kinds[i], lag)
			}
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s: the client's call: got %v, want Unavailable", kinds[i], err)
			}
		}
		for range kinds {
			e := await(t, w.ended, 5*time.Second, "a callback handler's context to end")
			if lag := e.at.Sub(killed); e.err == nil || lag > 2*time.Second {
				t.Errorf("%s: the callback handler's context ended %v after the kill (%v)", e.method, lag, e.err)
			}
		}
		t.Logf("everything failed within %v", time.Since(killed))
		eventually(t, 5*time.Second, "the server to forget the peer", func() bool { return len(srv.Peers()) == 0 })
	})
}
