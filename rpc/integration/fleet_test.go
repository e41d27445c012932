package integration

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/health"
	"github.com/muxrpc/muxrpc/rpc/health/healthv1"
	"google.golang.org/grpc/backoff"
	"google.golang.org/protobuf/types/known/emptypb"
)

// wait bounds each wait of the fleet tests.
const fleetWait = 10 * time.Second

// fastConnect makes Clients reconnect within a test's patience.
var fastConnect = rpc.WithConnectParams(rpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
	MinConnectTimeout: 2 * time.Second,
})

// fleetServer is one muxrpc server of a test's fleet. Its Unary answers
// with its name and records each request's message, so that a test can
// tell that no call ran twice; its Announce calls the caller back on the
// session the call came in on.
type fleetServer struct {
	echov1.UnimplementedEchoServer
	name   string
	addr   string
	srv    *rpc.Server
	health *health.Server
	done   chan struct{}

	mu  sync.Mutex
	ran map[string]int // request message -> handler runs
}

// startFleetServer serves a fleet server on addr ("127.0.0.1:0": any port).
func startFleetServer(t *testing.T, name, addr string) *fleetServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &fleetServer{name: name, addr: ln.Addr().String(), srv: rpc.NewServer(), health: health.NewServer(), done: make(chan struct{}), ran: map[string]int{}}
	echov1.RegisterEchoServer(s.srv, s)
	health.Register(s.srv, s.health)
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	t.Cleanup(s.stop)
	return s
}

// stop stops the server at once, as a crash would for its clients.
func (s *fleetServer) stop() {
	s.srv.Stop()
	<-s.done
}

func (s *fleetServer) Unary(ctx context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	s.mu.Lock()
	s.ran[in.Message]++
	s.mu.Unlock()
	return &echov1.EchoResponse{Message: s.name}, nil
}

func (s *fleetServer) Announce(ctx context.Context, in *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	back := rpc.PeerFromContext(ctx)
	n := int32(0)
	for _, m := range in.Messages {
		if _, err := echov1.NewNotifierClient(back).Notify(ctx, &echov1.Notification{Message: s.name + ":" + m}); err != nil {
			return nil, err
		}
		n++
	}
	return &echov1.AnnounceResponse{Delivered: n}, nil
}

// runs returns how many times each request ran on s.
func (s *fleetServer) runs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.ran))
	for k, v := range s.ran {
		out[k] = v
	}
	return out
}

// notifier is the service a test's Client exposes: it records what the
// servers' calls back delivered.
type notifier struct {
	echov1.UnimplementedNotifierServer
	mu  sync.Mutex
	got []string
}

func (n *notifier) Notify(_ context.Context, in *echov1.Notification) (*emptypb.Empty, error) {
	n.mu.Lock()
	n.got = append(n.got, in.Message)
	n.mu.Unlock()
	return &emptypb.Empty{}, nil
}

func (n *notifier) delivered() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.got...)
}

// newFleetClient makes a Client for target with a Notifier of its own,
// balancing round robin over servers that report serving.
func newFleetClient(t *testing.T, target string, opts ...rpc.DialOption) (*rpc.Client, *notifier) {
	t.Helper()
	n := &notifier{}
	callbacks := rpc.NewServer()
	echov1.RegisterNotifierServer(callbacks, n)
	opts = append([]rpc.DialOption{rpc.WithServices(callbacks), rpc.WithBalancer(rpc.RoundRobin), rpc.WithHealthCheck(health.Check("")), fastConnect}, opts...)
	c, err := rpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, n
}

// answeredBy makes one call and returns the name of the server that ran it.
func answeredBy(t *testing.T, ctx context.Context, c rpc.ClientConnInterface, msg string) string {
	t.Helper()
	out, err := echov1.NewEchoClient(c).Unary(ctx, &echov1.EchoRequest{Message: msg}, rpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("call %q: %v", msg, err)
	}
	return out.Message
}

// untilAll calls until every one of names has answered.
func untilAll(t *testing.T, ctx context.Context, c rpc.ClientConnInterface, names ...string) {
	t.Helper()
	missing := map[string]bool{}
	for _, n := range names {
		missing[n] = true
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(fleetWait)
	for len(missing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %v never answered; %v did", fleetWait, missing, seen)
		}
		name := answeredBy(t, ctx, c, "warm")
		seen[name] = true
		delete(missing, name)
	}
}

// spread makes n calls and counts them by the server that ran them.
func spread(t *testing.T, ctx context.Context, c rpc.ClientConnInterface, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		counts[answeredBy(t, ctx, c, "spread")]++
	}
	return counts
}

// checkCallbacks checks that every one of names, called through c, can
// call c's own Notifier back on the session the call came in on.
func checkCallbacks(t *testing.T, ctx context.Context, c rpc.ClientConnInterface, n *notifier, names ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, name := range names {
		want[name+":hello"] = true
	}
	deadline := time.Now().Add(fleetWait)
	for len(want) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no callback from %v; got %v", want, n.delivered())
		}
		out, err := echov1.NewEchoClient(c).Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"hello"}}, rpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("a call that calls back: %v", err)
		}
		if out.Delivered != 1 {
			t.Fatalf("delivered %d callbacks, want 1", out.Delivered)
		}
		for _, m := range n.delivered() {
			delete(want, m)
		}
	}
}

// setServing sets the whole server's health status.
func (s *fleetServer) setServing(serving bool) {
	st := healthv1.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthv1.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
}

// loadResult is what a load of calls met.
type loadResult struct {
	ok, failed int
	failures   []error
	sent       map[string]bool // message -> succeeded
}

// load runs callers goroutines making calls with unique messages, each
// bounded by perCall, until stop closes.
func load(ctx context.Context, c rpc.ClientConnInterface, callers int, perCall time.Duration, stop <-chan struct{}) loadResult {
	var mu sync.Mutex
	res := loadResult{sent: map[string]bool{}}
	var seq atomic.Int64
	var wg sync.WaitGroup
	for w := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				msg := "load-" + strconv.Itoa(w) + "-" + strconv.FormatInt(seq.Add(1), 10)
				cctx, cancel := context.WithTimeout(ctx, perCall)
				_, err := echov1.NewEchoClient(c).Unary(cctx, &echov1.EchoRequest{Message: msg})
				cancel()
				mu.Lock()
				res.sent[msg] = err == nil
				if err == nil {
					res.ok++
				} else {
					res.failed++
					res.failures = append(res.failures, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}
