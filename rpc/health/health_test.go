package health_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/health"
	"github.com/muxrpc/muxrpc/rpc/health/healthv1"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait of the tests.
const wait = 10 * time.Second

// forEachTransport runs f as a sub-test on each mux transport.
func forEachTransport(t *testing.T, f func(t *testing.T, tr mux.Transport)) {
	for _, tr := range []mux.Transport{mux.Native, mux.Smux} {
		t.Run(tr.String(), func(t *testing.T) { f(t, tr) })
	}
}

func muxOpt(tr mux.Transport) rpc.Option { return rpc.MuxConfig(&mux.Config{Transport: tr}) }

// serve serves srv on a loopback listener until the test ends and returns
// its address.
func serve(t *testing.T, srv *rpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

// dial dials addr on tr; the Peer closes when the test ends.
func dial(t *testing.T, addr string, tr mux.Transport) *rpc.Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, err := rpc.Dial(ctx, addr, muxOpt(tr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// setup serves a health Server on tr and dials it.
func setup(t *testing.T, tr mux.Transport, opts ...rpc.ServerOption) (*health.Server, *rpc.Server, *rpc.Peer) {
	t.Helper()
	srv := rpc.NewServer(append(opts, muxOpt(tr))...)
	hs := health.NewServer()
	health.Register(srv, hs)
	return hs, srv, dial(t, serve(t, srv), tr)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// await returns the next value from ch, failing the test if none comes in
// time.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", wait, what)
	}
	panic("unreachable")
}

// quiet fails the test if ch delivers anything within d.
func quiet[T any](t *testing.T, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	case <-time.After(d):
	}
}

const (
	serving        = healthv1.HealthCheckResponse_SERVING
	notServing     = healthv1.HealthCheckResponse_NOT_SERVING
	serviceUnknown = healthv1.HealthCheckResponse_SERVICE_UNKNOWN
)

func TestCheck(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		hs, _, p := setup(t, tr)
		hs.SetServingStatus("up", serving)
		hs.SetServingStatus("down", notServing)
		c := healthv1.NewHealthClient(p)
		ctx := testCtx(t)
		for service, want := range map[string]healthv1.HealthCheckResponse_ServingStatus{"": serving, "up": serving, "down": notServing} {
			resp, err := c.Check(ctx, &healthv1.HealthCheckRequest{Service: service})
			if err != nil {
				t.Fatalf("Check(%q): %v", service, err)
			}
			if resp.GetStatus() != want {
				t.Errorf("Check(%q) = %v, want %v", service, resp.GetStatus(), want)
			}
		}
		_, err := c.Check(ctx, &healthv1.HealthCheckRequest{Service: "unknown"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("Check of an unknown service: %v, want NotFound", err)
		}
	})
}

func TestList(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		hs, _, p := setup(t, tr)
		hs.SetServingStatus("down", notServing)
		resp, err := healthv1.NewHealthClient(p).List(testCtx(t), &healthv1.HealthListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got := resp.GetStatuses()
		if len(got) != 2 || got[""].GetStatus() != serving || got["down"].GetStatus() != notServing {
			t.Fatalf("List = %v, want \"\" SERVING and down NOT_SERVING", got)
		}
	})
}

// watch opens a Watch of service and delivers each status it receives;
// the channel closes when the Watch fails.
func watch(t *testing.T, ctx context.Context, p *rpc.Peer, service string) <-chan healthv1.HealthCheckResponse_ServingStatus {
	t.Helper()
	stream, err := healthv1.NewHealthClient(p).Watch(ctx, &healthv1.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan healthv1.HealthCheckResponse_ServingStatus)
	go func() {
		defer close(ch)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case ch <- resp.GetStatus():
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// next returns the next status a watch delivers.
func next(t *testing.T, ch <-chan healthv1.HealthCheckResponse_ServingStatus) healthv1.HealthCheckResponse_ServingStatus {
	t.Helper()
	st, ok := <-chanWithin(t, ch)
	if !ok {
		t.Fatal("the watch ended")
	}
	return st
}

// chanWithin passes on the next value (or the close) of ch, failing the
// test if neither comes in time.
func chanWithin[T any](t *testing.T, ch <-chan T) <-chan T {
	t.Helper()
	out := make(chan T, 1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if ok {
			out <- v
		}
		close(out)
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for a status", wait)
	}
	return out
}

func TestWatch(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		hs, _, p := setup(t, tr)
		hs.SetServingStatus("svc", serving)
		ctx := testCtx(t)
		w := watch(t, ctx, p, "svc")
		if got := next(t, w); got != serving {
			t.Fatalf("first status %v, want SERVING", got)
		}
		for i, want := range []healthv1.HealthCheckResponse_ServingStatus{notServing, serving, notServing, serving} {
			hs.SetServingStatus("svc", want)
			if got := next(t, w); got != want {
				t.Fatalf("status %d: %v, want %v", i, got, want)
			}
		}

		unknown := watch(t, ctx, p, "later")
		if got := next(t, unknown); got != serviceUnknown {
			t.Fatalf("an unknown service: %v, want SERVICE_UNKNOWN", got)
		}
		hs.SetServingStatus("later", serving)
		if got := next(t, unknown); got != serving {
			t.Fatalf("once known: %v, want SERVING", got)
		}
	})
}

func TestShutdown(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		hs, _, p := setup(t, tr)
		hs.SetServingStatus("a", serving)
		hs.SetServingStatus("b", serving)
		ctx := testCtx(t)
		watches := map[string]<-chan healthv1.HealthCheckResponse_ServingStatus{}
		for _, service := range []string{"", "a", "b"} {
			watches[service] = watch(t, ctx, p, service)
			if got := next(t, watches[service]); got != serving {
				t.Fatalf("watch of %q: %v, want SERVING", service, got)
			}
		}
		hs.Shutdown()
		for service, w := range watches {
			if got := next(t, w); got != notServing {
				t.Fatalf("after Shutdown, watch of %q: %v, want NOT_SERVING", service, got)
			}
		}
		hs.SetServingStatus("a", serving) // ignored until Resume
		quiet(t, watches["a"], 100*time.Millisecond, "status after Shutdown")
		hs.Resume()
		for service, w := range watches {
			if got := next(t, w); got != serving {
				t.Fatalf("after Resume, watch of %q: %v, want SERVING", service, got)
			}
		}
	})
}

// run runs check on p until ctx ends, delivering its reports and its
// result.
func run(ctx context.Context, check rpc.HealthCheck, p *rpc.Peer) (<-chan bool, <-chan error) {
	reports, errc := make(chan bool, 16), make(chan error, 1)
	go func() { errc <- check(ctx, p, func(serving bool) { reports <- serving }) }()
	return reports, errc
}

// watchEnds is a stream interceptor that reports when a Watch handler
// returns.
func watchEnds() (rpc.ServerOption, <-chan struct{}) {
	ended := make(chan struct{}, 16)
	return rpc.ChainStreamServer(func(srv any, ss rpc.ServerStream, info *rpc.StreamServerInfo, handler rpc.StreamHandler) error {
		defer func() {
			if info.FullMethod == healthv1.Health_Watch_FullMethodName {
				ended <- struct{}{}
			}
		}()
		return handler(srv, ss)
	}), ended
}

func TestCheckFollowsStatus(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		opt, ended := watchEnds()
		hs, _, p := setup(t, tr, opt)
		hs.SetServingStatus("svc", notServing)
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		reports, errc := run(ctx, health.Check("svc"), p)
		if await(t, reports, "the first report") {
			t.Fatal("first report serving, want not serving")
		}
		for i, st := range []healthv1.HealthCheckResponse_ServingStatus{serving, notServing, serving} {
			hs.SetServingStatus("svc", st)
			if got := await(t, reports, "a report"); got != (st == serving) {
				t.Fatalf("report %d: serving %v after %v", i, got, st)
			}
		}
		hs.SetServingStatus("svc", healthv1.HealthCheckResponse_UNKNOWN)
		if await(t, reports, "the report of UNKNOWN") {
			t.Fatal("UNKNOWN reported serving")
		}

		cancel()
		if err := await(t, errc, "the check's end"); err != nil {
			t.Fatalf("the check ended with %v after its context, want nil", err)
		}
		await(t, ended, "the server's Watch to return")
		quiet(t, reports, 50*time.Millisecond, "report after the end")
	})
}

func TestCheckUnknownService(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		hs, _, p := setup(t, tr)
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		reports, errc := run(ctx, health.Check("later"), p)
		if await(t, reports, "the first report") {
			t.Fatal("SERVICE_UNKNOWN reported serving")
		}
		hs.SetServingStatus("later", serving)
		if !await(t, reports, "the report once the service is known") {
			t.Fatal("SERVING reported not serving")
		}
		cancel()
		if err := await(t, errc, "the check's end"); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
	})
}

func TestCheckWithoutHealthService(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := rpc.NewServer(muxOpt(tr)) // no health service
		p := dial(t, serve(t, srv), tr)
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		reports, errc := run(ctx, health.Check(""), p)
		if !await(t, reports, "the report") {
			t.Fatal("a server without the health service reported not serving")
		}
		select {
		case err := <-errc:
			t.Fatalf("the check returned %v before its context ended", err)
		case r := <-reports:
			t.Fatalf("a second report %v", r)
		case <-time.After(100 * time.Millisecond):
		}
		cancel()
		if err := await(t, errc, "the check's end"); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
	})
}

func TestCheckWithoutHealthServiceSessionEnds(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := rpc.NewServer(muxOpt(tr))
		p := dial(t, serve(t, srv), tr)
		reports, errc := run(testCtx(t), health.Check(""), p)
		await(t, reports, "the report")
		srv.Stop()
		if err := await(t, errc, "the check's end"); err == nil {
			t.Fatal("the session ended and the check returned nil")
		}
	})
}

func TestCheckSessionEnds(t *testing.T) {
	for _, how := range []string{"server stops", "client closes"} {
		t.Run(how, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr mux.Transport) {
				_, srv, p := setup(t, tr)
				reports, errc := run(testCtx(t), health.Check(""), p)
				if !await(t, reports, "the first report") {
					t.Fatal("first report not serving")
				}
				start := time.Now()
				if how == "server stops" {
					srv.Stop()
				} else {
					p.Close()
				}
				err := await(t, errc, "the check's end")
				if err == nil {
					t.Fatal("the session ended and the check returned nil")
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("the check took %v to notice the session's end", d)
				}
				if errors.Is(err, health.ErrWatchEnded) {
					t.Errorf("got %v, want the session's failure", err)
				}
			})
		})
	}
}

func TestCheckWatchEnded(t *testing.T) {
	// A server whose Watch returns OK after one status.
	srv := rpc.NewServer()
	healthv1.RegisterHealthServer(srv, oneShot{})
	p := dial(t, serve(t, srv), mux.Native)
	reports, errc := run(testCtx(t), health.Check(""), p)
	if !await(t, reports, "the report") {
		t.Fatal("SERVING reported not serving")
	}
	if err := await(t, errc, "the check's end"); !errors.Is(err, health.ErrWatchEnded) {
		t.Fatalf("got %v, want ErrWatchEnded", err)
	}
}

type oneShot struct {
	healthv1.UnimplementedHealthServer
}

func (oneShot) Watch(_ *healthv1.HealthCheckRequest, s rpc.ServerStreamingServer[healthv1.HealthCheckResponse]) error {
	return s.Send(&healthv1.HealthCheckResponse{Status: serving})
}

func TestCheckWatchFails(t *testing.T) {
	srv := rpc.NewServer()
	healthv1.RegisterHealthServer(srv, failing{})
	p := dial(t, serve(t, srv), mux.Native)
	_, errc := run(testCtx(t), health.Check(""), p)
	if err := await(t, errc, "the check's end"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want the Watch's PermissionDenied", err)
	}
}

type failing struct {
	healthv1.UnimplementedHealthServer
}

func (failing) Watch(*healthv1.HealthCheckRequest, rpc.ServerStreamingServer[healthv1.HealthCheckResponse]) error {
	return status.Error(codes.PermissionDenied, "no")
}

func TestRegisterNil(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Register(nil) did not panic")
		}
	}()
	health.Register(rpc.NewServer(), nil)
}

func TestOneServerOnTwo(t *testing.T) {
	hs := health.NewServer()
	var watches []<-chan healthv1.HealthCheckResponse_ServingStatus
	ctx := testCtx(t)
	for range 2 {
		srv := rpc.NewServer()
		health.Register(srv, hs)
		w := watch(t, ctx, dial(t, serve(t, srv), mux.Native), "")
		if got := next(t, w); got != serving {
			t.Fatalf("first status %v, want SERVING", got)
		}
		watches = append(watches, w)
	}
	hs.SetServingStatus("", notServing)
	for i, w := range watches {
		if got := next(t, w); got != notServing {
			t.Fatalf("server %d: %v, want NOT_SERVING", i, got)
		}
	}
}
