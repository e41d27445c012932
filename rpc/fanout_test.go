package rpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// scaledAgents is how many agents the tests of many agents connect at
// once. Each costs about 10 goroutines today (both ends of its session
// are in the test's process): 1,000 agents peak near 9,700 goroutines,
// which the race detector of Go 1.26 runs without reaching a limit.
const scaledAgents = 1000

// agentName is the name of the i-th of many agents: names sort as the
// agents count.
func agentName(i int) string { return fmt.Sprintf("agent%04d", i) }

// startAgents connects n agents to addr, agentName(i) each with the
// callback services services(i), eight dials at a time, and closes them
// when the test ends.
func startAgents(t testing.TB, addr string, n int, services func(i int) *Server) []*Peer {
	t.Helper()
	ctx := testCtx(t, 60*time.Second)
	agents := make([]*Peer, n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				agents[i], errs[i] = Dial(ctx, addr, agentCredentials(agentName(i), ""), WithServices(services(i)))
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, p := range agents {
			if p != nil {
				wg.Go(func() { p.Close() })
			}
		}
		wg.Wait()
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("agent %s: %v", agentName(i), err)
		}
	}
	return agents
}

// callEcho is a FanOut call: test.Echo's Unary of "ping".
func callEcho(ctx context.Context, cc ClientConnInterface) (string, error) {
	out, err := echoClient{cc}.Unary(ctx, wrapperspb.String("ping"))
	return out.GetValue(), err
}

// TestFanOutWithStalledAgents fans a call out to scaledAgents agents,
// one in 20 of which never answers:
// with a Timeout of 1 s, FanOut returns within a few seconds, with one
// result per agent in the order of their names, the answer of each that
// answers and DeadlineExceeded for each that stalled. Fanned out with a
// context that has ended, it calls nobody and returns at once.
func TestFanOutWithStalledAgents(t *testing.T) {
	n := scaledAgents
	stalled := func(i int) bool { return i%20 == 7 }
	stall := NewServer()
	stall.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	srv, addr := agentServer(t, mux.Native)
	startAgents(t, addr, n, func(i int) *Server {
		if stalled(i) {
			return stall
		}
		return agentServices(agentName(i))
	})
	fleet := srv.Directory().Fleet("test.Echo", RoundRobin)
	if got := fleet.Len(); got != n {
		t.Fatalf("the fleet has %d members, want %d", got, n)
	}

	ctx := testCtx(t, 30*time.Second)
	start := time.Now()
	results := FanOut(ctx, fleet, FanOutOptions{Timeout: time.Second}, callEcho)
	took := time.Since(start)
	t.Logf("FanOut to %d agents, %d stalled, Timeout 1 s: %v", n, n/20, took)
	if len(results) != n {
		t.Fatalf("%d results for %d agents", len(results), n)
	}
	answered, expired := 0, 0
	for i, r := range results {
		name := agentName(i)
		switch {
		case r.Name != name || r.Peer == nil || r.Peer.Identity().Name != name:
			t.Fatalf("result %d is of %q (peer %v), want %s", i, r.Name, r.Peer, name)
		case stalled(i) && status.Code(r.Err) != codes.DeadlineExceeded:
			t.Errorf("stalled %s: %q, %v; want DeadlineExceeded", name, r.Reply, r.Err)
		case stalled(i):
			expired++
		case r.Err != nil || r.Reply != name+":ping":
			t.Errorf("%s: %q, %v; want %s:ping", name, r.Reply, r.Err, name)
		default:
			answered++
		}
	}
	if answered != n-n/20 || expired != n/20 {
		t.Errorf("%d answered and %d expired, want %d and %d", answered, expired, n-n/20, n/20)
	}
	if took < time.Second || took > 10*time.Second {
		t.Errorf("FanOut took %v, want the Timeout of 1 s and little more", took)
	}

	ended, cancel := context.WithCancel(ctx)
	cancel()
	start = time.Now()
	for _, r := range FanOut(ended, fleet, FanOutOptions{}, callEcho) {
		if status.Code(r.Err) != codes.Canceled {
			t.Fatalf("%s with an ended context: %v, want Canceled", r.Name, r.Err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("FanOut with an ended context took %v", d)
	}
}

// TestFanOutBoundsConcurrency fans out to 20 agents whose handler takes
// 20 ms, with Concurrency 4: never more than 4 calls run at once, and
// every agent answers.
func TestFanOutBoundsConcurrency(t *testing.T) {
	var running, peak atomic.Int64
	slow := NewServer()
	slow.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		return in, nil
	}})
	srv, addr := agentServer(t, mux.Native)
	startAgents(t, addr, 20, func(int) *Server { return slow })
	results := FanOut(testCtx(t, 20*time.Second), srv.Directory().Fleet("test.Echo", LeastOutstanding), FanOutOptions{Concurrency: 4}, callEcho)
	for _, r := range results {
		if r.Err != nil || r.Reply != "ping" {
			t.Errorf("%s: %q, %v", r.Name, r.Reply, r.Err)
		}
	}
	if len(results) != 20 {
		t.Errorf("%d results for 20 agents", len(results))
	}
	if p := peak.Load(); p > 4 || p < 2 {
		t.Errorf("%d calls ran at once with Concurrency 4", p)
	}
}

// TestDirectoryCallsManyAgentsByName connects scaledAgents agents, each
// with its own identity, and calls each
// by name through Directory.Conn ten times, 64 calls at a time: every
// call reaches the agent it names.
func TestDirectoryCallsManyAgentsByName(t *testing.T) {
	n := scaledAgents
	srv, addr := agentServer(t, mux.Native)
	startAgents(t, addr, n, func(i int) *Server { return agentServices(agentName(i)) })
	dir := srv.Directory()
	if got := dir.Len(); got != n {
		t.Fatalf("the Directory lists %d names, want %d", got, n)
	}
	ctx := testCtx(t, 60*time.Second)
	var next, correct atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				conn := dir.Conn(agentName(i))
				for range 10 {
					out, err := callEcho(ctx, conn)
					if err != nil || out != agentName(i)+":ping" {
						t.Errorf("a call to %s: %q, %v", agentName(i), out, err)
						return
					}
					correct.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d calls by name to %d agents: %v", correct.Load(), n, time.Since(start))
	if got := correct.Load(); got != int64(10*n) {
		t.Errorf("%d calls answered correctly, want %d", got, 10*n)
	}
}
