package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/backoff"
)

// W9 and W10 run a fleet: fleetSize servers of the framework, each on a
// listener of its own, all in the one server child, and one long-lived
// client over all of them (gRPC-Go's grpc.NewClient over a manual
// resolver's addresses, muxrpc's rpc.NewClient over a static: target).

// fleetSize is the number of servers of a fleet.
const fleetSize = 3

// fleetBackoff is the reconnection backoff of every fleet client, the same
// on every framework, short so that a server restarted in W10 is rejoined
// within a fraction of a second: gRPC's backoff from 100 ms by 1.6 up to
// 1 s, ±20% jitter, at least 1 s per attempt.
var fleetBackoff = rpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}

// fleetOptions are what a workload asks of a fleet client.
type fleetOptions struct {
	// leastOutstanding balances by calls in flight (muxrpc's
	// LeastOutstanding, gRPC-Go's least_request_experimental) rather
	// than round robin.
	leastOutstanding bool
	// waitForReady makes every call wait for a ready connection rather
	// than fail while none is (W10).
	waitForReady bool
}

// A fleetConn is a client over a fleet's servers.
type fleetConn interface {
	unaryCaller
	close() error
}

// hasFleetClient is the applies of W9 and W10.
func hasFleetClient(f *framework) string {
	if f.dialFleet == nil {
		return "no client over many servers"
	}
	return ""
}

// A fleetServer is one server of the server child's fleet.
type fleetServer struct {
	addr   string
	srv    server // nil while killed
	served atomic.Int64
}

// A fleet is the server child's fleet, started by the "fleet" request.
type fleet struct {
	fw      *framework
	servers []*fleetServer
}

// serveFleetServer starts s's server on a new listener at s.addr (or a
// port of the kernel's choosing, for an empty addr), retrying for a while
// if the address is still held.
func (f *fleet) serveFleetServer(s *fleetServer) error {
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	s.served.Store(0)
	srv, err := f.fw.serve(lis, &benchServer{served: &s.served})
	if err != nil {
		lis.Close()
		return err
	}
	s.addr, s.srv = lis.Addr().String(), srv
	return nil
}

// handle answers the fleet's requests: "fleet" starts req.Count servers
// and replies with their addresses; "kill" stops server req.Index, its
// listener and its connections, and replies with the time Stop returned
// (Unix ns); "restart" serves it again on the same address; "served"
// replies with the Unary calls server req.Index answered since it last
// started.
func (f *fleet) handle(req serverRequest) serverReply {
	if req.Op == "fleet" {
		if f.servers != nil {
			return serverReply{Err: "a second fleet"}
		}
		var rep serverReply
		for range req.Count {
			s := &fleetServer{}
			if err := f.serveFleetServer(s); err != nil {
				return serverReply{Err: err.Error()}
			}
			f.servers = append(f.servers, s)
			rep.Addrs = append(rep.Addrs, s.addr)
		}
		return rep
	}
	if req.Index < 0 || req.Index >= len(f.servers) {
		return serverReply{Err: fmt.Sprintf("%s: no fleet server %d", req.Op, req.Index)}
	}
	s := f.servers[req.Index]
	switch req.Op {
	case "kill":
		if s.srv == nil {
			return serverReply{Err: "kill: server already killed"}
		}
		s.srv.stop()
		s.srv = nil
		return serverReply{At: time.Now().UnixNano()}
	case "restart":
		if s.srv != nil {
			return serverReply{Err: "restart: server running"}
		}
		if err := f.serveFleetServer(s); err != nil {
			return serverReply{Err: err.Error()}
		}
		return serverReply{}
	case "served":
		return serverReply{Calls: s.served.Load()}
	}
	return serverReply{Err: fmt.Sprintf("unknown op %q", req.Op)}
}

// stop stops the fleet's servers.
func (f *fleet) stop() {
	for _, s := range f.servers {
		if s.srv != nil {
			s.srv.stop()
		}
	}
}

// startFleet asks the server child for a fleet and connects a fleet
// client to it, then waits until every server has answered calls of the
// client's, so that the client has a connection to each.
func (e *clientEnv) startFleet(ctx context.Context, o fleetOptions) (fleetConn, []string, error) {
	rep, err := e.server.ask(serverRequest{Op: "fleet", Count: fleetSize})
	if err != nil {
		return nil, nil, err
	}
	c, err := e.fw.dialFleet(ctx, rep.Addrs, o)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: fleet client: %w", e.fw.name, err)
	}
	for i := range rep.Addrs {
		if err := e.awaitServed(ctx, c, i); err != nil {
			c.close()
			return nil, nil, err
		}
	}
	return c, rep.Addrs, nil
}

// awaitServed makes calls on c, one every 10 ms, until fleet server i has
// answered one, and returns the time it took.
func (e *clientEnv) awaitServed(ctx context.Context, c fleetConn, i int) error {
	req := newRequest(0, e.p.SmallSize)
	deadline := time.Now().Add(30 * time.Second)
	for seq := uint64(0); ; seq++ {
		rep, err := e.server.ask(serverRequest{Op: "served", Index: i})
		if err != nil {
			return err
		}
		if rep.Calls > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fleet server %d answered no call in 30 s", i)
		}
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		sent := req.next(seq)
		ans, err := c.unary(callCtx, sent)
		cancel()
		if err == nil {
			if err := checkEcho(sent, ans); err != nil {
				return err
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runW9 is 64 callers of unary calls through one client balancing over
// the fleet, by round robin or, with leastOutstanding, by calls in
// flight. Every server must have answered calls of the measured window.
func runW9(leastOutstanding bool) func(ctx context.Context, e *clientEnv) (sample, error) {
	return func(ctx context.Context, e *clientEnv) (sample, error) {
		c, _, err := e.startFleet(ctx, fleetOptions{leastOutstanding: leastOutstanding})
		if err != nil {
			return sample{}, err
		}
		defer c.close()
		before := make([]int64, fleetSize)
		for i := range before {
			rep, err := e.server.ask(serverRequest{Op: "served", Index: i})
			if err != nil {
				return sample{}, err
			}
			before[i] = rep.Calls
		}
		s, err := timedUnary(ctx, e, repeat(c, e.p.Callers), e.p.SmallSize, false)
		if err != nil {
			return s, err
		}
		for i := range before {
			rep, err := e.server.ask(serverRequest{Op: "served", Index: i})
			if err != nil {
				return s, err
			}
			if rep.Calls == before[i] {
				return s, fmt.Errorf("fleet server %d answered no call of the measurement", i)
			}
		}
		return s, nil
	}
}

// A callRecord is one call of W10's caller: when it started and ended,
// in Unix ns, and whether it succeeded.
type callRecord struct {
	start, end int64
	ok         bool
}

// A callLog records W10's calls in room allocated in advance and wakes
// whoever waits for the next.
type callLog struct {
	mu    sync.Mutex
	calls []callRecord
	added chan struct{} // a token after each record
}

func (l *callLog) record(r callRecord) {
	l.mu.Lock()
	l.calls = append(l.calls, r)
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
}

// firstSuccessSince waits for the first successful call started at or
// after t (Unix ns) and returns its end, and the calls that failed among
// those recorded from position from on; it returns the position to look
// from next.
func (l *callLog) firstSuccessSince(ctx context.Context, t int64, from int) (end int64, failed int64, next int, err error) {
	for {
		l.mu.Lock()
		for ; from < len(l.calls); from++ {
			r := l.calls[from]
			if !r.ok {
				failed++
				continue
			}
			if r.start >= t {
				l.mu.Unlock()
				return r.end, failed, from + 1, nil
			}
		}
		l.mu.Unlock()
		select {
		case <-l.added:
		case <-ctx.Done():
			return 0, failed, from, ctx.Err()
		}
	}
}

// failedSince returns the calls that failed among those recorded from
// position from on.
func (l *callLog) failedSince(from int) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var failed int64
	for _, r := range l.calls[min(from, len(l.calls)):] {
		if !r.ok {
			failed++
		}
	}
	return failed
}

// runW10 is failover: one caller makes back-to-back unary calls, waiting
// for ready, through a round-robin client over the fleet, while the
// harness kills a server (its listener and connections, abruptly), waits
// for the first call started after the kill to succeed, restarts the
// server on the same address, waits until the client has rejoined it (it
// answered a call), and moves on to the next server, e.p.Kills times. The
// sample's P50 and P99 are of the recovery times, from the kill to the
// end of that first successful call; Failed counts the calls that
// failed; Rejoin is the median time from a restart until the restarted
// server answered a call.
func runW10(ctx context.Context, e *clientEnv) (sample, error) {
	var s sample
	c, _, err := e.startFleet(ctx, fleetOptions{waitForReady: true})
	if err != nil {
		return s, err
	}
	defer c.close()
	if _, _, err := unaryLoad(ctx, repeat(c, 1), e.p.SmallSize, e.p.Warmup, nil); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}

	log := &callLog{calls: make([]callRecord, 0, 1<<20), added: make(chan struct{}, 1)}
	stopCalls := make(chan struct{})
	callerDone := make(chan error, 1)
	go func() {
		req := newRequest(0, e.p.SmallSize)
		for seq := uint64(0); ; seq++ {
			select {
			case <-stopCalls:
				callerDone <- nil
				return
			default:
			}
			sent := req.next(seq)
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now().UnixNano()
			ans, err := c.unary(callCtx, sent)
			end := time.Now().UnixNano()
			cancel()
			if err == nil {
				if err := checkEcho(sent, ans); err != nil {
					callerDone <- err
					return
				}
			}
			log.record(callRecord{start: start, end: end, ok: err == nil})
		}
	}()

	next := 0 // the position in log of the first call not yet accounted for
	recoveries := make([]time.Duration, 0, e.p.Kills)
	rejoins := make([]time.Duration, 0, e.p.Kills)
	err = e.measure(&s, func() error {
		for k := range e.p.Kills {
			i := k % fleetSize
			rep, err := e.server.ask(serverRequest{Op: "kill", Index: i})
			if err != nil {
				return err
			}
			waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			end, failed, n, err := log.firstSuccessSince(waitCtx, rep.At, next)
			cancel()
			if err != nil {
				return fmt.Errorf("kill %d: no call succeeded after it: %w", k, err)
			}
			next = n
			s.Failed += failed
			recoveries = append(recoveries, time.Duration(end-rep.At))
			restarted := time.Now()
			if _, err := e.server.ask(serverRequest{Op: "restart", Index: i}); err != nil {
				return err
			}
			if err := e.awaitRejoined(ctx, i); err != nil {
				return fmt.Errorf("kill %d: %w", k, err)
			}
			rejoins = append(rejoins, time.Since(restarted))
		}
		return nil
	})
	close(stopCalls)
	if callerErr := <-callerDone; err == nil {
		err = callerErr
	}
	s.Failed += log.failedSince(next)
	s.Ops = int64(len(recoveries))
	s.P50, s.P99 = percentile(recoveries, 0.50), percentile(recoveries, 0.99)
	s.Rejoin = percentile(rejoins, 0.50)
	return s, err
}

// awaitRejoined polls fleet server i, every 5 ms, until it has answered a
// call of the caller's since it restarted.
func (e *clientEnv) awaitRejoined(ctx context.Context, i int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep, err := e.server.ask(serverRequest{Op: "served", Index: i})
		if err != nil {
			return err
		}
		if rep.Calls > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the restarted server answered no call in 30 s")
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// percentile returns the q-quantile of ds, 0 for none; it sorts ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	l := latencyLog{d: ds}
	return l.percentile(q)
}
