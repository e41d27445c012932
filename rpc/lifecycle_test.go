package rpc

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Tests of how Servers and Peers stop: what waits for what, and what the
// calls in flight get.

// muxOptClose is muxOpt with a CloseTimeout.
func muxOptClose(tr mux.Transport, closeTimeout time.Duration) Option {
	return MuxConfig(&mux.Config{Transport: tr, CloseTimeout: closeTimeout})
}

// stubborn is test.Echo whose unary handler reports on started and then
// ignores its context: it returns only once release is closed, which
// happens when the test ends at the latest.
func stubborn(t *testing.T) (impl *funcEcho, started chan struct{}, release chan struct{}) {
	started, release = make(chan struct{}, 16), make(chan struct{})
	impl = &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		started <- struct{}{}
		<-release
		return in, nil
	}}
	return impl, started, release
}

// wantClosing fails unless err is the error of a call cut by this side's
// Close: Canceled, and errors.Is ErrConnClosing.
func wantClosing(t testing.TB, err error) {
	t.Helper()
	if status.Code(err) != codes.Canceled || !errors.Is(err, ErrConnClosing) {
		t.Fatalf("got %v, want Canceled and ErrConnClosing", err)
	}
}

// TestStopDoesNotWaitForStubbornHandlers stops a server while a handler
// that ignores its context runs: Stop returns at once, and a GracefulStop
// waiting for that handler returns once Stop is called, the pattern of
// "GracefulStop with a timeout, then Stop".
func TestStopDoesNotWaitForStubbornHandlers(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, graceful := range []bool{false, true} {
			name := map[bool]string{false: "Stop", true: "GracefulStop then Stop"}[graceful]
			t.Run(name, func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				impl, started, release := stubborn(t)
				srv := NewServer(muxOpt(tr))
				srv.RegisterService(&echoDesc, impl)
				p := dial(t, serve(t, srv), muxOpt(tr))
				t.Cleanup(func() { close(release) }) // before the server's cleanup Stop
				call := async(func() error { _, err := echoClient{p}.Unary(ctx, wrapperspb.String("x")); return err })
				await(t, started, 5*time.Second, "the handler to start")

				var gracefulDone <-chan error
				if graceful {
					gracefulDone = async(func() error { srv.GracefulStop(); return nil })
					select {
					case <-gracefulDone:
						t.Fatal("GracefulStop returned while a handler ran")
					case <-time.After(300 * time.Millisecond):
					}
				}
				stopped := async(func() error { srv.Stop(); return nil })
				await(t, stopped, 3*time.Second, "Stop to return")
				if graceful {
					await(t, gracefulDone, 3*time.Second, "GracefulStop to return after Stop")
				}
				if err := await(t, call, 3*time.Second, "the call to fail"); status.Code(err) != codes.Unavailable {
					t.Fatalf("the call in flight: got %v, want Unavailable", err)
				}
			})
		}
	})
}

// TestServeReturnsNilOnceStopped runs Serve while the server stops: Serve
// returns nil, and only once the stop has completed, after GracefulStop
// has waited for the call in flight, as after Stop; Serve called after a
// stop returns ErrServerStopped.
func TestServeReturnsNilOnceStopped(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, graceful := range []bool{true, false} {
			name := map[bool]string{false: "Stop", true: "GracefulStop"}[graceful]
			t.Run(name, func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				impl, started, release := holder()
				srv := NewServer(muxOpt(tr))
				srv.RegisterService(&echoDesc, impl)
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				served := async(func() error { return srv.Serve(ln) })
				p := dial(t, ln.Addr().String(), muxOpt(tr))
				held := holdCall(ctx, p)
				await(t, started, 5*time.Second, "the held call's handler")

				stop := srv.Stop
				if graceful {
					stop = srv.GracefulStop
				}
				stopped := async(func() error { stop(); return nil })
				if graceful {
					select {
					case err := <-served:
						t.Fatalf("Serve returned %v while GracefulStop waited for a call", err)
					case <-stopped:
						t.Fatal("GracefulStop returned while a call was in flight")
					case <-time.After(300 * time.Millisecond):
					}
					close(release)
					if err := await(t, held, 5*time.Second, "the held call"); err != nil {
						t.Fatalf("the call in flight failed: %v", err)
					}
				}
				await(t, stopped, 5*time.Second, "the stop to complete")
				if err := await(t, served, 5*time.Second, "Serve to return"); err != nil {
					t.Fatalf("Serve after %s: got %v, want nil", name, err)
				}
				if !graceful {
					close(release)
					await(t, held, 5*time.Second, "the held call")
				}
				ln2, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				if err := srv.Serve(ln2); !errors.Is(err, ErrServerStopped) {
					t.Fatalf("Serve after the stop: got %v, want ErrServerStopped", err)
				}
			})
		}
	})
}

// TestPeerCloseDoesNotWaitForCallsInFlight closes a Peer while its calls
// of every kind are in flight, and while a call from the other side runs
// in its handler, with a long mux CloseTimeout: Close returns at once; the
// calls fail with Canceled and ErrConnClosing, as do new ones; the
// handler's context was cancelled and it has returned by then.
func TestPeerCloseDoesNotWaitForCallsInFlight(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		atServer, atClient := newWaiter(), newWaiter()
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, atServer)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, atClient)
		p := dial(t, serve(t, srv), WithServices(callbacks), muxOptClose(tr, 20*time.Second))

		var calls []<-chan error
		for _, kind := range callKinds {
			calls = append(calls, async(func() error { return blockedCall(ctx, p, kind) }))
			await(t, atServer.started, 5*time.Second, kind+" to start")
		}
		back := async(func() error { return blockedCall(ctx, onlyPeer(t, srv), "unary") })
		await(t, atClient.started, 5*time.Second, "the call back to start")

		closed := async(func() error { return p.Close() })
		if err := await(t, closed, 3*time.Second, "Close to return"); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-atClient.ended:
			if e.err == nil {
				t.Fatal("the handler's context never ended")
			}
		default:
			t.Fatal("Close returned before this side's handler did")
		}
		for i, call := range calls {
			err := await(t, call, 3*time.Second, callKinds[i]+" to fail")
			wantClosing(t, err)
		}
		_, err := echoClient{p}.Unary(ctx, wrapperspb.String("x"))
		wantClosing(t, err)
		// The other side sees its connection end, or, when the cancelled
		// handler's answer got out first, the cancellation.
		if err := await(t, back, 5*time.Second, "the call back to fail"); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
			t.Fatalf("the other side's call: got %v, want Unavailable or Canceled", err)
		}
	})
}

// TestPeerShutdownWaitsForCallsInFlight shuts a Peer down gracefully while
// a call it made is in flight: Shutdown waits for it however long it
// takes, beyond the mux CloseTimeout, then closes the session; with a
// context that ends first, Shutdown returns the context's error and the
// call fails with Canceled.
func TestPeerShutdownWaitsForCallsInFlight(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		t.Run("drained", func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			impl, started, release := holder()
			srv := NewServer(muxOpt(tr))
			srv.RegisterService(&echoDesc, impl)
			p := dial(t, serve(t, srv), muxOptClose(tr, 100*time.Millisecond))
			held := holdCall(ctx, p)
			await(t, started, 5*time.Second, "the held call's handler")

			shut := async(func() error { return p.Shutdown(ctx) })
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned %v while a call was in flight", err)
			case err := <-held:
				t.Fatalf("the call in flight ended early: %v", err)
			case <-time.After(time.Second):
			}
			close(release)
			if err := await(t, held, 5*time.Second, "the held call"); err != nil {
				t.Fatalf("the call in flight failed: %v", err)
			}
			if err := await(t, shut, 5*time.Second, "Shutdown to return"); err != nil {
				t.Fatal(err)
			}
			await(t, p.Done(), time.Second, "the session to end")
			_, err := echoClient{p}.Unary(ctx, wrapperspb.String("x"))
			wantClosing(t, err)
		})
		t.Run("context ended", func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			impl, started, _ := holder()
			srv := NewServer(muxOpt(tr))
			srv.RegisterService(&echoDesc, impl)
			p := dial(t, serve(t, srv), muxOpt(tr))
			held := holdCall(ctx, p)
			await(t, started, 5*time.Second, "the held call's handler")

			shutCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			shut := async(func() error { return p.Shutdown(shutCtx) })
			if err := await(t, shut, 3*time.Second, "Shutdown to return"); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown: got %v, want context.DeadlineExceeded", err)
			}
			wantClosing(t, await(t, held, 3*time.Second, "the held call to fail"))
		})
	})
}

// TestGracefulStopWaitsForCallbacksInFlight stops a server gracefully
// while it calls back into a client (outside any handler, as through
// OnPeer) and the call takes longer than the mux CloseTimeout: GracefulStop
// waits for it without a time limit, the call finishes OK, and then the
// session closes.
func TestGracefulStopWaitsForCallbacksInFlight(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv := NewServer(muxOptClose(tr, 100*time.Millisecond))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		impl, started, release := holder()
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, impl)
		p := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		held := holdCall(ctx, onlyPeer(t, srv))
		await(t, started, 5*time.Second, "the call back's handler")

		stopped := async(func() error { srv.GracefulStop(); return nil })
		select {
		case <-stopped:
			t.Fatal("GracefulStop returned while a call back was in flight")
		case err := <-held:
			t.Fatalf("the call back ended before its handler was released: %v", err)
		case <-time.After(time.Second):
		}
		close(release)
		if err := await(t, held, 5*time.Second, "the call back"); err != nil {
			t.Fatalf("the call back failed: %v", err)
		}
		await(t, stopped, 5*time.Second, "GracefulStop to return")
		await(t, p.Done(), 5*time.Second, "the client's session to end")
	})
}
