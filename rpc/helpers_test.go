package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Helpers shared by the behaviour tests.

// serveOn serves srv on ln (a TLS listener, say) until the test ends.
func serveOn(t testing.TB, srv *Server, ln net.Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

// await returns the next value from ch, failing the test if none comes
// within d.
func await[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	panic("unreachable")
}

// eventually polls cond until it holds, failing the test after d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// async runs f in its own goroutine and delivers its error.
func async(f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	return errc
}

// wantStatus fails the test unless err carries code and a message
// containing substr.
func wantStatus(t testing.TB, err error, code codes.Code, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	s, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v (%T) carries no status, want %v", err, err, code)
	}
	if s.Code() != code || !strings.Contains(s.Message(), substr) {
		t.Fatalf("got %v %q, want %v with %q", s.Code(), s.Message(), code, substr)
	}
}

// onlyPeer waits for srv to have exactly one peer and returns it: the
// server's side of the test's one session.
func onlyPeer(t testing.TB, srv *Server) *Peer {
	t.Helper()
	var p *Peer
	eventually(t, 5*time.Second, "the server's peer", func() bool {
		peers := srv.Peers()
		if len(peers) == 1 {
			p = peers[0]
		}
		return len(peers) == 1
	})
	return p
}

// checkEcho makes one unary call through cc and checks that name answered.
func checkEcho(t testing.TB, ctx context.Context, cc ClientConnInterface, name string) {
	t.Helper()
	out, err := echoClient{cc}.Unary(ctx, wrapperspb.String("ping"))
	if err != nil {
		t.Fatalf("a normal call failed: %v", err)
	}
	if want := name + ":ping"; out.Value != want {
		t.Fatalf("got %q, want %q", out.Value, want)
	}
}

// funcEcho is test.Echo with methods a test can replace; those it leaves
// nil behave as echoImpl named "server".
type funcEcho struct {
	unary        func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	serverStream func(*wrapperspb.StringValue, ServerStreamingServer[wrapperspb.StringValue]) error
	clientStream func(ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error
	bidi         func(BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error
}

var defaultEcho = &echoImpl{name: "server"}

func (f *funcEcho) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if f.unary == nil {
		return defaultEcho.Unary(ctx, in)
	}
	return f.unary(ctx, in)
}

func (f *funcEcho) ServerStream(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
	if f.serverStream == nil {
		return defaultEcho.ServerStream(in, s)
	}
	return f.serverStream(in, s)
}

func (f *funcEcho) ClientStream(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	if f.clientStream == nil {
		return defaultEcho.ClientStream(s)
	}
	return f.clientStream(s)
}

func (f *funcEcho) Bidi(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	if f.bidi == nil {
		return defaultEcho.Bidi(s)
	}
	return f.bidi(s)
}

// The four call kinds, for tests that run each.
var callKinds = []string{"unary", "serverStream", "clientStream", "bidi"}

// ctxSeen is what a waiter's handler saw of its context when it started.
type ctxSeen struct {
	deadline    time.Time
	hasDeadline bool
	method      string
}

// ctxEnd is when a waiter's handler saw its context end, and why.
type ctxEnd struct {
	method string
	at     time.Time
	err    error // nil: the context never ended
}

// waiter is test.Echo whose handlers block until their context ends. Each
// reports on started once it runs (streaming ones after the first request)
// and on ended when its context ends. The client- and bidi-streaming
// handlers keep reading requests meanwhile, as real handlers do.
type waiter struct {
	started chan ctxSeen
	ended   chan ctxEnd
}

func newWaiter() *waiter {
	return &waiter{started: make(chan ctxSeen, 64), ended: make(chan ctxEnd, 64)}
}

func (w *waiter) seen(ctx context.Context) {
	d, ok := ctx.Deadline()
	m, _ := Method(ctx)
	w.started <- ctxSeen{deadline: d, hasDeadline: ok, method: m}
}

func (w *waiter) wait(ctx context.Context) error {
	m, _ := Method(ctx)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		w.ended <- ctxEnd{method: m, at: time.Now(), err: ctx.Err()}
		return ctx.Err()
	case <-timer.C:
		w.ended <- ctxEnd{method: m, at: time.Now()}
		return status.Error(codes.Internal, "the handler's context never ended")
	}
}

func (w *waiter) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	w.seen(ctx)
	return nil, w.wait(ctx)
}

func (w *waiter) ServerStream(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
	w.seen(s.Context())
	return w.wait(s.Context())
}

func (w *waiter) ClientStream(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	return w.readThenWait(s)
}

func (w *waiter) Bidi(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	return w.readThenWait(s)
}

func (w *waiter) readThenWait(s interface {
	Recv() (*wrapperspb.StringValue, error)
	ServerStream
}) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	w.seen(s.Context())
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
	return w.wait(s.Context())
}

// blockedCall makes a call of kind that a waiter blocks in, and returns the
// call's error. Streaming calls send one request and do not end their
// requests, then wait for a response.
func blockedCall(ctx context.Context, cc ClientConnInterface, kind string) error {
	c := echoClient{cc}
	in := wrapperspb.String("block")
	var err error
	switch kind {
	case "unary":
		_, err = c.Unary(ctx, in)
	case "serverStream":
		var s ServerStreamingClient[wrapperspb.StringValue]
		if s, err = c.ServerStream(ctx, in); err == nil {
			_, err = s.Recv()
		}
	case "clientStream":
		var s ClientStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue]
		if s, err = c.ClientStream(ctx); err == nil {
			// A Send that fails returns io.EOF; RecvMsg says why.
			if err = s.Send(in); err == nil || err == io.EOF {
				err = s.RecvMsg(new(wrapperspb.StringValue))
			}
		}
	case "bidi":
		var s BidiStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue]
		if s, err = c.Bidi(ctx); err == nil {
			if err = s.Send(in); err == nil || err == io.EOF {
				_, err = s.Recv()
			}
		}
	default:
		return fmt.Errorf("unknown call kind %q", kind)
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("blocked %s call ended without an error (%v)", kind, err)
	}
	return err
}

// relay is test.Echo answered by calling the caller back with the
// handler's own context: each handler makes the same kind of call to the
// caller's services and passes the answers on (the streaming ones pass
// the requests on as they come, while they wait for the answers). Each
// reports the error of its call back on backErr; after a call back
// failed, it waits for its own context to end (10 s at most) and reports
// that on ended, before it returns.
type relay struct {
	echoImpl
	backErr chan error
	ended   chan ctxEnd
}

func newRelay() *relay {
	return &relay{echoImpl: echoImpl{name: "relay"}, backErr: make(chan error, 64), ended: make(chan ctxEnd, 64)}
}

// failed reports the failure of a call back and then the end of the
// handler's context, and returns err.
func (r *relay) failed(ctx context.Context, err error) error {
	r.backErr <- err
	m, _ := Method(ctx)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		r.ended <- ctxEnd{method: m, at: time.Now(), err: ctx.Err()}
	case <-timer.C:
		r.ended <- ctxEnd{method: m, at: time.Now()}
	}
	return err
}

func (r *relay) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	out, err := echoClient{PeerFromContext(ctx)}.Unary(ctx, in)
	if err != nil {
		return nil, r.failed(ctx, err)
	}
	r.backErr <- nil
	return out, nil
}

func (r *relay) ServerStream(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
	back, err := echoClient{PeerFromContext(s.Context())}.ServerStream(s.Context(), in)
	if err != nil {
		return r.failed(s.Context(), err)
	}
	return r.passAnswers(s.Context(), back, s)
}

func (r *relay) ClientStream(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	back, err := echoClient{PeerFromContext(s.Context())}.ClientStream(s.Context())
	if err != nil {
		return r.failed(s.Context(), err)
	}
	go passRequests(s, back)
	out := new(wrapperspb.StringValue)
	if err := back.RecvMsg(out); err != nil {
		return r.failed(s.Context(), err)
	}
	r.backErr <- nil
	return s.SendAndClose(out)
}

func (r *relay) Bidi(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	back, err := echoClient{PeerFromContext(s.Context())}.Bidi(s.Context())
	if err != nil {
		return r.failed(s.Context(), err)
	}
	go passRequests(s, back)
	return r.passAnswers(s.Context(), back, s)
}

// passAnswers sends the answers of a call back on to the caller until the
// call back ends.
func (r *relay) passAnswers(ctx context.Context, back interface {
	Recv() (*wrapperspb.StringValue, error)
}, s interface {
	Send(*wrapperspb.StringValue) error
}) error {
	for {
		m, err := back.Recv()
		if errors.Is(err, io.EOF) {
			r.backErr <- nil
			return nil
		}
		if err != nil {
			return r.failed(ctx, err)
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
}

// passRequests sends the caller's requests on to a call back, and ends the
// call back's requests after the caller's last; it returns once the
// caller's requests end, as they do when the handler returns.
func passRequests(s interface {
	Recv() (*wrapperspb.StringValue, error)
}, back interface {
	Send(*wrapperspb.StringValue) error
	CloseSend() error
}) {
	for {
		in, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				back.CloseSend()
			}
			return
		}
		if back.Send(in) != nil {
			return
		}
	}
}
