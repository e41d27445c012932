package rpc

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// holder is test.Echo whose unary handler, asked to "hold", reports on
// started and returns "held" once release is closed.
func holder() (impl *funcEcho, started chan struct{}, release chan struct{}) {
	started, release = make(chan struct{}, 16), make(chan struct{})
	impl = &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.Value != "hold" {
			return defaultEcho.Unary(ctx, in)
		}
		started <- struct{}{}
		select {
		case <-release:
			return wrapperspb.String("held"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	return impl, started, release
}

// holdCall makes a call that a holder holds, and delivers its error.
func holdCall(ctx context.Context, p *Peer) <-chan error {
	return async(func() error {
		out, err := echoClient{p}.Unary(ctx, wrapperspb.String("hold"))
		if err == nil && out.Value != "held" {
			return status.Errorf(codes.Internal, "got %q", out.Value)
		}
		return err
	})
}

// wantRetrySafe fails unless err is Unavailable and retry-safe.
func wantRetrySafe(t testing.TB, err error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !IsRetrySafe(err) {
		t.Fatalf("got %v (retry-safe %v), want Unavailable and retry-safe", err, IsRetrySafe(err))
	}
}

// firstFailure calls through p until a call fails, and returns its error.
func firstFailure(t testing.TB, ctx context.Context, p *Peer) error {
	t.Helper()
	var err error
	eventually(t, 5*time.Second, "a call to fail", func() bool {
		_, err = echoClient{p}.Unary(ctx, wrapperspb.String("x"))
		return err != nil
	})
	return err
}

// TestGracefulStop stops a server while a call is in flight on one of two
// clients: the idle client's new calls fail with Unavailable and
// IsRetrySafe (after the GoAway on the native transport; after its
// session closed on smux, which has no GoAway), GracefulStop waits for the
// handler in flight, whose call then finishes OK, and both sessions end.
func TestGracefulStop(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		impl, started, release := holder()
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		addr := serve(t, srv)
		busy, idle := dial(t, addr, muxOpt(tr)), dial(t, addr, muxOpt(tr))
		checkEcho(t, ctx, idle, "server")

		held := holdCall(ctx, busy)
		await(t, started, 5*time.Second, "the held call's handler")
		stopped := async(func() error { srv.GracefulStop(); return nil })

		if tr == mux.Native {
			wantRetrySafe(t, firstFailure(t, ctx, idle))
			// The busy client received the GoAway too: its new calls fail
			// the same way while its call in flight goes on.
			wantRetrySafe(t, firstFailure(t, ctx, busy))
		} else {
			await(t, idle.Done(), 5*time.Second, "the idle client's session to end")
			_, err := echoClient{idle}.Unary(ctx, wrapperspb.String("x"))
			wantRetrySafe(t, err)
		}
		select {
		case <-stopped:
			t.Fatal("GracefulStop returned while a handler was running")
		case err := <-held:
			t.Fatalf("the held call ended before its handler was released: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		close(release)
		if err := await(t, held, 5*time.Second, "the held call"); err != nil {
			t.Fatalf("the call in flight failed: %v", err)
		}
		await(t, stopped, 5*time.Second, "GracefulStop to return")
		await(t, busy.Done(), 5*time.Second, "the busy client's session to end")
		_, err := echoClient{busy}.Unary(ctx, wrapperspb.String("x"))
		wantRetrySafe(t, err)
	})
}

// TestGoAwayRefusesNewCalls sends a GoAway on the server's side of a
// session directly: the client's new calls fail with Unavailable and
// IsRetrySafe, and carry the GoAway's debug data; the call in flight
// finishes OK; the server can still call the client, since a GoAway only
// stops the side that receives it. The smux transport has no GoAway.
func TestGoAwayRefusesNewCalls(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		impl, started, release := holder()
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
		client := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		server := onlyPeer(t, srv)

		held := holdCall(ctx, client)
		await(t, started, 5*time.Second, "the held call's handler")
		err := server.Session().GoAway(mux.GoAwayNormal, []byte("going away"))
		if tr == mux.Smux {
			if !errors.Is(err, mux.ErrUnsupported) {
				t.Fatalf("GoAway on smux: got %v, want mux.ErrUnsupported", err)
			}
			close(release)
			if err := await(t, held, 5*time.Second, "the held call"); err != nil {
				t.Fatal(err)
			}
			checkEcho(t, ctx, client, "server")
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		// Every call after the GoAway fails retry-safe; once the GoAway has
		// arrived, the error says so.
		var goAway *mux.GoAwayError
		eventually(t, 5*time.Second, "a call to fail with the GoAway", func() bool {
			_, err := echoClient{client}.Unary(ctx, wrapperspb.String("x"))
			wantRetrySafe(t, err)
			return errors.As(err, &goAway)
		})
		if !goAway.Remote || string(goAway.Debug) != "going away" {
			t.Errorf("got %+v, want the server's GoAway with its debug data", goAway)
		}
		checkEcho(t, ctx, server, "client")
		close(release)
		if err := await(t, held, 5*time.Second, "the held call"); err != nil {
			t.Fatalf("the call in flight failed: %v", err)
		}
		if client.Err() != nil {
			t.Fatalf("the session ended: %v", client.Err())
		}
	})
}

// TestServerStreamOpenedBeforeTheEndFailsAtOnce begins a
// server-streaming call, whose request waits to go out with its end, and
// only then has the server send a GoAway, or vanish. Once the client
// knows, the request goes out no more and the call's Recv fails at once
// with Unavailable, having run no handler, where it used to wait forever
// for the answer to a call the server never heard of; on the native
// transport the failure is retry-safe (on smux the stream's opening went
// out with NewStream, and a vanished peer leaves its fate unknown).
func TestServerStreamOpenedBeforeTheEndFailsAtOnce(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, how := range []string{"GoAway", "server vanished"} {
			if how == "GoAway" && tr == mux.Smux {
				continue // smux has no GoAway
			}
			t.Run(how, func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				var runs atomic.Int32
				srv := NewServer(muxOpt(tr))
				srv.RegisterService(&echoDesc, &funcEcho{serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
					runs.Add(1)
					return s.Send(in)
				}})
				var client *Peer
				endAfterOpening := func(ctx context.Context, desc *StreamDesc, cc ClientConnInterface, method string, streamer Streamer, opts ...CallOption) (ClientStream, error) {
					cs, err := streamer(ctx, desc, cc, method, opts...)
					if err != nil {
						return nil, err
					}
					if how == "GoAway" {
						onlyPeer(t, srv).Session().GoAway(mux.GoAwayNormal, nil)
						wantRetrySafe(t, firstFailure(t, ctx, client))
					} else {
						srv.Stop()
						await(t, client.Done(), 5*time.Second, "the client's session to end")
					}
					return cs, nil
				}
				client = dial(t, serve(t, srv), muxOpt(tr), ChainStreamClient(endAfterOpening))
				err := await(t, async(func() error {
					s, err := echoClient{client}.ServerStream(ctx, wrapperspb.String("late"))
					if err == nil {
						_, err = s.Recv()
					}
					return err
				}), 5*time.Second, "the call to fail")
				if tr == mux.Native {
					wantRetrySafe(t, err)
				} else if status.Code(err) != codes.Unavailable {
					t.Fatalf("got %v, want Unavailable", err)
				}
				if n := runs.Load(); n != 0 {
					t.Fatalf("the handler ran %d times", n)
				}
			})
		}
	})
}
