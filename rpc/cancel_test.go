package rpc

import (
	"context"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cancelSetup connects a client to a server; both serve test.Echo with a
// waiter, so either side can make calls that block in the other's
// handlers.
func cancelSetup(t *testing.T, tr mux.Transport) []callDirection {
	atServer, atClient := newWaiter(), newWaiter()
	srv := NewServer(muxOpt(tr))
	srv.RegisterService(&echoDesc, atServer)
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, atClient)
	client := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
	return []callDirection{
		{"clientToServer", client, atServer},
		{"serverToClient", onlyPeer(t, srv), atClient},
	}
}

// callDirection is a caller and the waiter its calls block in.
type callDirection struct {
	name   string
	caller *Peer
	callee *waiter
}

// TestDeadlineReachesHandler makes a call of each kind with a 1 s deadline,
// in both directions: each handler's context has the caller's deadline,
// is not done before it, and ends within a second after it; the caller
// gets DeadlineExceeded.
func TestDeadlineReachesHandler(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, dir := range cancelSetup(t, tr) {
			t.Run(dir.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				deadline, _ := ctx.Deadline()
				errcs := map[string]<-chan error{}
				for _, kind := range callKinds {
					errcs[kind] = async(func() error { return blockedCall(ctx, dir.caller, kind) })
				}
				for range callKinds {
					s := await(t, dir.callee.started, 5*time.Second, "a handler to start")
					if !s.hasDeadline {
						t.Errorf("%s: the handler's context has no deadline", s.method)
						continue
					}
					if d := s.deadline.Sub(deadline); d < -10*time.Millisecond || d > 200*time.Millisecond {
						t.Errorf("%s: the handler's deadline is %v off the caller's", s.method, d)
					}
				}
				var worst time.Duration
				for range callKinds {
					e := await(t, dir.callee.ended, 5*time.Second, "a handler's context to end")
					lag := e.at.Sub(deadline)
					switch {
					case e.err == nil:
						t.Errorf("%s: the handler's context never ended", e.method)
					case lag < -10*time.Millisecond:
						t.Errorf("%s: the handler's context ended %v before the deadline (%v)", e.method, -lag, e.err)
					case lag > time.Second:
						t.Errorf("%s: the handler's context ended %v after the deadline", e.method, lag)
					}
					worst = max(worst, lag)
				}
				for kind, errc := range errcs {
					err := await(t, errc, 5*time.Second, kind+" call to fail")
					if status.Code(err) != codes.DeadlineExceeded {
						t.Errorf("%s: caller got %v, want DeadlineExceeded", kind, err)
					}
				}
				t.Logf("handlers' contexts ended at most %v after the deadline", worst)
			})
		}
	})
}

// TestCancelReachesHandler cancels a call of each kind, in both
// directions, while its handler blocks: the handler's context ends within
// a second (it takes milliseconds) and the caller gets Canceled at once.
func TestCancelReachesHandler(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, dir := range cancelSetup(t, tr) {
			t.Run(dir.name, func(t *testing.T) {
				for _, kind := range callKinds {
					t.Run(kind, func(t *testing.T) {
						ctx, cancel := context.WithCancel(context.Background())
						defer cancel()
						errc := async(func() error { return blockedCall(ctx, dir.caller, kind) })
						s := await(t, dir.callee.started, 5*time.Second, "the handler to start")
						if s.hasDeadline {
							t.Errorf("the handler has a deadline (%v) the caller never set", s.deadline)
						}
						cancelled := time.Now()
						cancel()
						err := await(t, errc, 5*time.Second, "the call to fail")
						callerLag := time.Since(cancelled)
						e := await(t, dir.callee.ended, 5*time.Second, "the handler's context to end")
						lag := e.at.Sub(cancelled)
						if e.err == nil || lag > time.Second {
							t.Errorf("the handler's context ended %v after the caller cancelled (err %v)", lag, e.err)
						}
						if status.Code(err) != codes.Canceled || callerLag > time.Second {
							t.Errorf("the caller got %v after %v, want Canceled at once", err, callerLag)
						}
						t.Logf("handler's context ended %v after cancel (%v); caller returned after %v", lag, e.err, callerLag)
					})
				}
			})
		}
	})
}

// TestCancelCascadesThroughCallback cancels a call whose handler is itself
// blocked in a call back to the caller, made with the handler's context:
// the deadline reaches the second hop, and the cancellation ends the
// callback's handler too, within a second.
func TestCancelCascadesThroughCallback(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		r, w := newRelay(), newWaiter()
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, r)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, w)
		client := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		for _, kind := range []string{"unary", "serverStream"} {
			t.Run(kind, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				deadline, _ := ctx.Deadline()
				errc := async(func() error { return blockedCall(ctx, client, kind) })
				s := await(t, w.started, 5*time.Second, "the callback's handler to start")
				if d := s.deadline.Sub(deadline); !s.hasDeadline || d < -10*time.Millisecond || d > 200*time.Millisecond {
					t.Errorf("the callback's handler has deadline %v (%v), %v off the caller's", s.deadline, s.hasDeadline, d)
				}
				cancelled := time.Now()
				cancel()
				e := await(t, w.ended, 5*time.Second, "the callback handler's context to end")
				if lag := e.at.Sub(cancelled); e.err == nil || lag > time.Second {
					t.Errorf("the callback handler's context ended %v after the cancel (%v)", lag, e.err)
				} else {
					t.Logf("two hops away, the handler's context ended %v after the cancel", lag)
				}
				if err := await(t, r.backErr, 5*time.Second, "the relay's call back to fail"); status.Code(err) != codes.Canceled {
					t.Errorf("the relay's call back got %v, want Canceled", err)
				}
				if err := await(t, errc, 5*time.Second, "the call to fail"); status.Code(err) != codes.Canceled {
					t.Errorf("the caller got %v, want Canceled", err)
				}
			})
		}
	})
}
