package rpc

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The Server's connection management: MaxConnectionAge, its grace, and
// MaxConnectionIdle.

// ageSlack is how late, beyond its bound, a session may end on a loaded
// machine under -race.
const ageSlack = time.Second

// wantMaxAgeGoAway fails unless err is the server's GoAway for the
// session's age.
func wantMaxAgeGoAway(t testing.TB, err error) {
	t.Helper()
	var g *mux.GoAwayError
	if !errors.As(err, &g) || !g.Remote || g.Code != mux.GoAwayNormal || string(g.Debug) != maxAgeDebug {
		t.Fatalf("got %v, want the server's GoAway saying %q", err, maxAgeDebug)
	}
}

// waitAged waits until the server's side of its one session has begun to
// drain, as an age shutdown does first, and returns when that was.
func waitAged(t testing.TB, srv *Server, within time.Duration) time.Time {
	t.Helper()
	p := onlyPeer(t, srv)
	eventually(t, within, "the age shutdown to begin", p.draining.Load)
	return time.Now()
}

// TestMaxConnectionAgeJitter checks the jitter itself: within a tenth of
// the age either way, and spread over that range.
func TestMaxConnectionAgeJitter(t *testing.T) {
	const d = time.Second
	lo, hi := d, d
	for range 10000 {
		j := jitter(d)
		if j < d*9/10 || j > d*11/10 {
			t.Fatalf("jitter(%v) = %v, outside [0.9, 1.1] of it", d, j)
		}
		lo, hi = min(lo, j), max(hi, j)
	}
	if lo > d*91/100 || hi < d*109/100 {
		t.Fatalf("10000 jittered ages of %v span only [%v, %v]", d, lo, hi)
	}
	if long := time.Duration(1<<63 - 1); jitter(long) != long {
		t.Fatalf("jitter overflowed an age of %v", long)
	}
}

// TestMaxConnectionAgeGoAwayDrainsThenCloses serves with a 300 ms
// MaxConnectionAge while a call is held in its handler. On the native
// transport the client's session receives the GoAway between 0.9 and 1.1
// of the age: its Draining closes, its new calls fail Unavailable and
// retry-safe, while the held call goes on and succeeds once released;
// then the session closes, its Err the server's GoAway saying "max
// connection age", and the server forgets it. On smux, which has no
// GoAway, the server drains from its age on while the client's new calls
// are still served, and closes the session once the held call has ended.
func TestMaxConnectionAgeGoAwayDrainsThenCloses(t *testing.T) {
	const age = 300 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		impl, started, release := holder()
		srv := NewServer(muxOpt(tr), MaxConnectionAge(age))
		srv.RegisterService(&echoDesc, impl)
		addr := serve(t, srv)
		t0 := time.Now() // before the server's session, and its timer, start
		client := dial(t, addr, muxOpt(tr))
		held := holdCall(ctx, client)
		await(t, started, 5*time.Second, "the held call's handler")

		var aged time.Time
		if tr == mux.Native {
			await(t, client.Session().Draining(), age*11/10+ageSlack, "the client's session to drain")
			aged = time.Now()
			_, err := echoClient{client}.Unary(ctx, wrapperspb.String("x"))
			wantRetrySafe(t, err)
			wantMaxAgeGoAway(t, err)
		} else {
			aged = waitAged(t, srv, age*11/10+ageSlack)
			checkEcho(t, ctx, client, "server") // no GoAway: new calls are still served
		}
		elapsed := aged.Sub(t0)
		t.Logf("the age shutdown began %v after the dial", elapsed.Round(time.Millisecond))
		if elapsed < age*9/10 {
			t.Fatalf("the age shutdown began %v after the dial, before 0.9 × %v", elapsed, age)
		}
		select {
		case err := <-held:
			t.Fatalf("the held call ended before its handler was released: %v", err)
		case <-client.Done():
			t.Fatalf("the session ended with a call in flight: %v", client.Err())
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		if err := await(t, held, 5*time.Second, "the held call"); err != nil {
			t.Fatalf("the call in flight at the age failed: %v", err)
		}
		await(t, client.Done(), 5*time.Second, "the client's session to end")
		if tr == mux.Native {
			wantMaxAgeGoAway(t, client.Err())
		} else {
			t.Logf("smux: the client's session ended with %v", client.Err())
		}
		_, err := echoClient{client}.Unary(ctx, wrapperspb.String("x"))
		wantRetrySafe(t, err)
		eventually(t, 5*time.Second, "the server to forget the peer", func() bool { return len(srv.Peers()) == 0 })
	})
}

// TestMaxConnectionAgeJitterSpreadsSessions opens 20 sessions to a server
// with a 500 ms MaxConnectionAge and no calls: each session ends (native:
// its GoAway arrives; smux: its connection closes, no call being in
// flight) between 0.9 and 1.1 of the age after its dial, and not all at
// the same moment: their ages spread over more than a twentieth of it.
func TestMaxConnectionAgeJitterSpreadsSessions(t *testing.T) {
	const age, sessions = 500 * time.Millisecond, 20
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := NewServer(muxOpt(tr), MaxConnectionAge(age))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		ages := make([]time.Duration, sessions)
		var wg sync.WaitGroup
		for i := range sessions {
			t0 := time.Now()
			p := dial(t, addr, muxOpt(tr))
			wg.Go(func() {
				select {
				case <-p.Session().Draining():
					ages[i] = time.Since(t0)
				case <-time.After(age*11/10 + ageSlack):
					ages[i] = -1
				}
			})
		}
		wg.Wait()
		for i, a := range ages {
			if a < 0 {
				t.Fatalf("session %d still ran %v after its dial", i, age*11/10+ageSlack)
			}
			if a < age*9/10 {
				t.Fatalf("session %d ended %v after its dial, before 0.9 × %v", i, a, age)
			}
		}
		spread := slices.Max(ages) - slices.Min(ages)
		t.Logf("20 sessions ended %v to %v after their dials", slices.Min(ages).Round(time.Millisecond), slices.Max(ages).Round(time.Millisecond))
		if spread < age/20 {
			t.Fatalf("20 sessions ended within %v of each other: no jitter", spread)
		}
	})
}

// TestMaxConnectionAgeGraceEndsCallsInFlight serves with a 200 ms
// MaxConnectionAge and a 200 ms MaxConnectionAgeGrace, while a call of
// each kind is held in a handler that returns only when its context
// ends: the session closes once the grace has run out (not before 0.9 ×
// age + grace, not much after 1.1 × age + grace), every call fails
// Unavailable, and every handler's context is cancelled.
func TestMaxConnectionAgeGraceEndsCallsInFlight(t *testing.T) {
	const age, grace = 200 * time.Millisecond, 200 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		w := newWaiter()
		srv := NewServer(muxOpt(tr), MaxConnectionAge(age), MaxConnectionAgeGrace(grace))
		srv.RegisterService(&echoDesc, w)
		addr := serve(t, srv)
		t0 := time.Now()
		client := dial(t, addr, muxOpt(tr))
		var errs []<-chan error
		for _, kind := range callKinds {
			errs = append(errs, async(func() error { return blockedCall(ctx, client, kind) }))
		}
		for range callKinds {
			await(t, w.started, 5*time.Second, "the handlers to start")
		}
		await(t, client.Done(), age*11/10+grace+ageSlack, "the session to close at the end of the grace")
		elapsed := time.Since(t0)
		t.Logf("the session closed %v after the dial: %v", elapsed.Round(time.Millisecond), client.Err())
		if elapsed < age*9/10+grace {
			t.Fatalf("the session closed %v after the dial, before 0.9 × age + grace", elapsed)
		}
		for i, kind := range callKinds {
			err := await(t, errs[i], 5*time.Second, "the "+kind+" call to fail")
			if status.Code(err) != codes.Unavailable {
				t.Errorf("the %s call in flight: got %v, want Unavailable", kind, err)
			}
		}
		for range callKinds {
			if end := await(t, w.ended, 5*time.Second, "the handlers' contexts to end"); end.err == nil {
				t.Errorf("%s: the handler's context was never cancelled", end.method)
			}
		}
		eventually(t, 5*time.Second, "the server to forget the peer", func() bool { return len(srv.Peers()) == 0 })
	})
}

// TestMaxConnectionAgeOnServeSession checks that sessions the caller
// makes age out too: ServeConn and ServeSession on one accepted
// connection each, with a 200 ms MaxConnectionAge. The client sees the
// session end within 1.1 × the age, and ServeConn or ServeSession
// returns nil.
func TestMaxConnectionAgeOnServeSession(t *testing.T) {
	const age = 200 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, how := range []string{"ServeConn", "ServeSession"} {
			t.Run(how, func(t *testing.T) {
				ctx := testCtx(t, 10*time.Second)
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				cfg := &mux.Config{Transport: tr}
				srv := NewServer(MuxConfig(cfg), MaxConnectionAge(age))
				srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
				defer srv.Stop()
				served := async(func() error {
					c, err := ln.Accept()
					if err != nil {
						return err
					}
					if how == "ServeConn" {
						return srv.ServeConn(c)
					}
					sess, err := mux.Server(c, cfg)
					if err != nil {
						return err
					}
					return srv.ServeSession(sess)
				})
				t0 := time.Now()
				sess, err := mux.Dial(ctx, "tcp", ln.Addr().String(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				client := NewPeer(sess)
				defer client.Close()
				checkEcho(t, ctx, client, "server")
				await(t, client.Done(), age*11/10+ageSlack, "the session to age out")
				if elapsed := time.Since(t0); elapsed < age*9/10 {
					t.Fatalf("the session ended %v after the dial, before 0.9 × %v", elapsed, age)
				}
				if tr == mux.Native {
					wantMaxAgeGoAway(t, client.Err())
				}
				if err := await(t, served, 5*time.Second, how+" to return"); err != nil {
					t.Fatalf("%s returned %v, want nil", how, err)
				}
			})
		}
	})
}

// TestMaxConnectionAgeStoppedMeanwhile stops the server while an age
// shutdown waits for a held call. Stop returns at once and fails the
// call Unavailable; GracefulStop waits for the call with the age
// shutdown, and returns once it has succeeded; a Stop then ends a
// GracefulStop still waiting, and both return at once. Nothing panics,
// and goleak finds nothing left.
func TestMaxConnectionAgeStoppedMeanwhile(t *testing.T) {
	const age = 200 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, stop := range []string{"Stop", "GracefulStop", "GracefulStop then Stop"} {
			t.Run(stop, func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				impl, started, release := holder()
				defer func() {
					select {
					case <-release:
					default:
						close(release)
					}
				}()
				srv := NewServer(muxOpt(tr), MaxConnectionAge(age))
				srv.RegisterService(&echoDesc, impl)
				addr := serve(t, srv)
				client := dial(t, addr, muxOpt(tr))
				held := holdCall(ctx, client)
				await(t, started, 5*time.Second, "the held call's handler")
				waitAged(t, srv, age*11/10+ageSlack)

				switch stop {
				case "Stop":
					await(t, async(func() error { srv.Stop(); return nil }), time.Second, "Stop to return")
					if err := await(t, held, 5*time.Second, "the held call"); status.Code(err) != codes.Unavailable {
						t.Fatalf("the held call: got %v, want Unavailable", err)
					}
				case "GracefulStop":
					stopped := async(func() error { srv.GracefulStop(); return nil })
					select {
					case <-stopped:
						t.Fatal("GracefulStop returned while a handler was running")
					case <-time.After(100 * time.Millisecond):
					}
					close(release)
					if err := await(t, held, 5*time.Second, "the held call"); err != nil {
						t.Fatalf("the held call failed: %v", err)
					}
					await(t, stopped, 5*time.Second, "GracefulStop to return")
				case "GracefulStop then Stop":
					stopped := async(func() error { srv.GracefulStop(); return nil })
					time.Sleep(50 * time.Millisecond)
					await(t, async(func() error { srv.Stop(); return nil }), time.Second, "Stop to return")
					await(t, stopped, time.Second, "GracefulStop to return after Stop")
					if err := await(t, held, 5*time.Second, "the held call"); status.Code(err) != codes.Unavailable {
						t.Fatalf("the held call: got %v, want Unavailable", err)
					}
				}
				await(t, client.Done(), 5*time.Second, "the client's session to end")
				eventually(t, 5*time.Second, "the server to forget the peer", func() bool { return len(srv.Peers()) == 0 })
			})
		}
	})
}

// TestMaxConnectionAgeSessionEndsFirst has a client close its session
// long before its hour's MaxConnectionAge: the server stops serving it at
// once, its age timer stopped, and a server with a MaxConnectionAgeGrace
// and no MaxConnectionAge ages nothing.
func TestMaxConnectionAgeSessionEndsFirst(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		for _, opts := range [][]ServerOption{
			{muxOpt(tr), MaxConnectionAge(time.Hour), MaxConnectionAgeGrace(time.Hour)},
			{muxOpt(tr), MaxConnectionAgeGrace(time.Millisecond)},
		} {
			srv := NewServer(opts...)
			srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
			client := dial(t, serve(t, srv), muxOpt(tr))
			checkEcho(t, ctx, client, "server")
			if len(opts) == 2 {
				time.Sleep(100 * time.Millisecond)
				checkEcho(t, ctx, client, "server")
			}
			client.Close()
			eventually(t, 5*time.Second, "the server to forget the peer", func() bool { return len(srv.Peers()) == 0 })
		}
	})
}

// TestMaxConnectionIdleOverridesMuxConfig checks that MaxConnectionIdle
// sets the sessions' IdleTimeout whether it comes before or after
// MuxConfig, and that without it MuxConfig's holds.
func TestMaxConnectionIdleOverridesMuxConfig(t *testing.T) {
	const idle = 300 * time.Millisecond
	muxCfg := MuxConfig(&mux.Config{IdleTimeout: time.Hour})
	for _, tc := range []struct {
		name string
		opts []ServerOption
		want time.Duration
	}{
		{"MaxConnectionIdle first", []ServerOption{MaxConnectionIdle(idle), muxCfg}, idle},
		{"MaxConnectionIdle last", []ServerOption{muxCfg, MaxConnectionIdle(idle)}, idle},
		{"MuxConfig alone", []ServerOption{muxCfg}, time.Hour},
		{"MaxConnectionIdle(0)", []ServerOption{muxCfg, MaxConnectionIdle(0)}, time.Hour},
	} {
		if got := NewServer(tc.opts...).cfg.peer.muxConfig().IdleTimeout; got != tc.want {
			t.Errorf("%s: IdleTimeout %v, want %v", tc.name, got, tc.want)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := NewServer(MaxConnectionIdle(-1)).Serve(ln); err == nil || !strings.Contains(err.Error(), "IdleTimeout") {
		t.Errorf("Serve with a negative MaxConnectionIdle: %v, want an error naming IdleTimeout", err)
	}
}

// TestMaxConnectionIdleEndsIdleSessions serves with a 300 ms
// MaxConnectionIdle, given before or after a MuxConfig: a session with no
// call ends about 300 ms after its dial (the server's Err is
// mux.ErrIdleTimeout; on the native transport the client gets the GoAway
// saying "idle timeout"), while a session with a bidi stream held open
// for a second lives on, and ends about 300 ms after the stream.
func TestMaxConnectionIdleEndsIdleSessions(t *testing.T) {
	const idle = 300 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, order := range []string{"MaxConnectionIdle first", "MaxConnectionIdle last"} {
			t.Run(order, func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				opts := []ServerOption{MaxConnectionIdle(idle), MuxConfig(&mux.Config{Transport: tr})}
				if order == "MaxConnectionIdle last" {
					slices.Reverse(opts)
				}
				peers := make(chan *Peer, 2)
				srv := NewServer(append(opts, OnPeer(func(p *Peer) { peers <- p }))...)
				srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
				addr := serve(t, srv)

				t0 := time.Now()
				idler := dial(t, addr, muxOpt(tr))
				idlerAtServer := await(t, peers, 5*time.Second, "OnPeer")
				busy := dial(t, addr, muxOpt(tr))
				await(t, peers, 5*time.Second, "OnPeer")
				stream, err := echoClient{busy}.Bidi(ctx)
				if err != nil {
					t.Fatal(err)
				}

				await(t, idler.Done(), idle+ageSlack, "the idle session to end")
				if elapsed := time.Since(t0); elapsed < idle*9/10 {
					t.Fatalf("the idle session ended %v after its dial, before 0.9 × %v", elapsed, idle)
				}
				<-idlerAtServer.Done()
				if err := idlerAtServer.Err(); !errors.Is(err, mux.ErrIdleTimeout) {
					t.Fatalf("the server's idle session ended with %v, want mux.ErrIdleTimeout", err)
				}
				if tr == mux.Native {
					var g *mux.GoAwayError
					if err := idler.Err(); !errors.As(err, &g) || !g.Remote || string(g.Debug) != "idle timeout" {
						t.Fatalf("the client's idle session ended with %v, want the GoAway saying idle timeout", err)
					}
				}

				for time.Since(t0) < time.Second {
					if err := stream.Send(wrapperspb.String("tick")); err != nil {
						t.Fatalf("the held stream's Send: %v", err)
					}
					if _, err := stream.Recv(); err != nil {
						t.Fatalf("the held stream's Recv: %v", err)
					}
					time.Sleep(idle / 3)
				}
				if err := busy.Err(); err != nil {
					t.Fatalf("the session with a stream open ended: %v", err)
				}
				stream.CloseSend()
				if _, err := stream.Recv(); err == nil {
					t.Fatal("the stream answered after its requests ended")
				}
				streamEnded := time.Now()
				await(t, busy.Done(), idle+ageSlack, "the session to end once idle")
				if elapsed := time.Since(streamEnded); elapsed < idle*8/10 {
					t.Fatalf("the session ended %v after its stream, before about %v", elapsed, idle)
				}
				eventually(t, 5*time.Second, "the server to forget the peers", func() bool { return len(srv.Peers()) == 0 })
			})
		}
	})
}
