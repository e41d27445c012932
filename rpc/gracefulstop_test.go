package rpc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A graceful stop with a thousand calls in flight, in both directions,
// of every kind: each call ends with the right answers or retry-safe, and
// the ledgers of handler runs say that none was lost or run twice.

// stopRig is a server and its clients, each side serving a ledgerEcho
// whose handlers wait at one gate, so that a test holds every call in the
// middle until it opens it.
type stopRig struct {
	tr         mux.Transport
	srv        *Server
	clients    []*Peer
	atServer   []*Peer // the server's side of each client's session
	serverRuns *runLedger
	clientRuns *runLedger
	gate       chan struct{}
	open       func() // opens the gate, once
}

func newStopRig(t *testing.T, tr mux.Transport, clients int) *stopRig {
	r := &stopRig{tr: tr, serverRuns: new(runLedger), clientRuns: new(runLedger), gate: make(chan struct{})}
	var once sync.Once
	r.open = func() { once.Do(func() { close(r.gate) }) }
	t.Cleanup(r.open) // before the server's Stop: nothing stays held
	hold := func(ctx context.Context) error {
		select {
		case <-r.gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.srv = NewServer(muxOpt(tr))
	r.srv.RegisterService(&echoDesc, &ledgerEcho{name: "server", peerName: "client", runs: r.serverRuns, hold: hold})
	addr := serve(t, r.srv)
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, &ledgerEcho{name: "client", peerName: "server", runs: r.clientRuns, hold: hold})
	for range clients {
		r.clients = append(r.clients, dial(t, addr, WithServices(callbacks), muxOpt(tr)))
	}
	eventually(t, 5*time.Second, "the server's peers", func() bool { return len(r.srv.Peers()) == clients })
	byAddr := map[string]*Peer{}
	for _, p := range r.srv.Peers() {
		byAddr[p.RemoteAddr().String()] = p
	}
	for _, p := range r.clients {
		sp := byAddr[p.Session().LocalAddr().String()]
		if sp == nil {
			t.Fatalf("no server peer for the client at %v", p.Session().LocalAddr())
		}
		r.atServer = append(r.atServer, sp)
	}
	return r
}

// stopCall is one call a stop test makes, and how it ended.
type stopCall struct {
	spec   ledgerSpec
	up     bool // from a client to the server; else the server calls a client back
	client int  // whose session
	racing bool // started with the stop, not before it
	err    error
	done   atomic.Bool
}

// caller returns the peer that makes c, and the name of the side that
// answers.
func (r *stopRig) caller(c *stopCall) (*Peer, string) {
	if c.up {
		return r.clients[c.client], "server"
	}
	return r.atServer[c.client], "client"
}

// callee returns the ledgers of the side that serves c and of the side
// that serves its call back.
func (r *stopRig) ledgers(c *stopCall) (runs, backRuns *runLedger) {
	if c.up {
		return r.serverRuns, r.clientRuns
	}
	return r.clientRuns, r.serverRuns
}

// entered reports whether c's handler, and its call back's if any, have
// run.
func (r *stopRig) entered(c *stopCall) bool {
	runs, backRuns := r.ledgers(c)
	return runs.runs(c.spec.id) > 0 && (c.spec.back == "" || backRuns.runs(c.spec.id+"/back") > 0)
}

// settled waits until each of calls has ended or reached its handler
// (and its call back's), and fails the test, naming those that have not,
// after 30 s.
func (r *stopRig) settled(t *testing.T, calls []*stopCall, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var stuck []string
		for _, c := range calls {
			if !c.done.Load() && !r.entered(c) {
				runs, backRuns := r.ledgers(c)
				stuck = append(stuck, fmt.Sprintf("%s %s (up %v, back %q: runs %d/%d)", c.spec.kind, c.spec.id, c.up, c.spec.back,
					runs.runs(c.spec.id), backRuns.runs(c.spec.id+"/back")))
			}
		}
		if len(stuck) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %d calls neither ended nor reached their handlers: %s", what, len(stuck), strings.Join(stuck[:min(len(stuck), 10)], "; "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *stopRig) run(ctx context.Context, c *stopCall) {
	p, name := r.caller(c)
	c.err = ledgerCall(ctx, p, c.spec, name)
	c.done.Store(true)
}

// plan returns n calls, a mix of every kind; one in five makes its
// handler call back first, with a call of a random kind.
func plan(rng *rand.Rand, n int, prefix string, up, racing bool, clients int) []*stopCall {
	calls := make([]*stopCall, n)
	for i := range calls {
		s := ledgerSpec{kind: callKinds[(i/5)%len(callKinds)], id: fmt.Sprintf("%s%d", prefix, i), n: 3, size: rng.IntN(2048)}
		if i%5 == 4 {
			s.back = callKinds[rng.IntN(len(callKinds))]
		}
		calls[i] = &stopCall{spec: s, up: up, client: i % clients, racing: racing}
	}
	return calls
}

// judge says how c ended, given whether its caller is the stopping side,
// or what is wrong with it: a call that succeeded ran once (and its call
// back once); one that failed retry-safe ran not at all, and had not
// started before the stop. The stopping side's own calls that race with
// its stop may also fail with ErrConnClosing, unrun; and one whose
// handler's call back, toward the stopping side, was refused fails with
// that status, its call back unrun. On smux, which has no GoAway, a call
// toward the stopping side that races the end of its session may fail
// with Unavailable and an unknown fate; it must not have run either.
func (r *stopRig) judge(c *stopCall, fromStopping bool) (string, error) {
	runs, backRuns := r.ledgers(c)
	ran := runs.runs(c.spec.id)
	backRan := int32(0)
	if c.spec.back != "" {
		backRan = backRuns.runs(c.spec.id + "/back")
	}
	what := fmt.Sprintf("%s %s (racing %v, back %q)", c.spec.kind, c.spec.id, c.racing, c.spec.back)
	s, _ := status.FromError(c.err)
	switch {
	case c.err == nil:
		if ran != 1 || c.spec.back != "" && backRan != 1 {
			return "", fmt.Errorf("%s succeeded, its handler ran %d times, its call back's %d", what, ran, backRan)
		}
		return "ok", nil
	case errors.Is(c.err, errWrongAnswer) || s.Code() == codes.DataLoss:
		return "", fmt.Errorf("%s: %v", what, c.err)
	case !c.racing:
		return "", fmt.Errorf("%s, in flight before the stop, failed: %v (ran %d)", what, c.err, ran)
	case s.Code() == codes.Unavailable && IsRetrySafe(c.err):
		if ran != 0 || backRan != 0 {
			return "", fmt.Errorf("%s failed retry-safe (%v), but its handler ran %d times, its call back's %d", what, c.err, ran, backRan)
		}
		return "refused", nil
	case fromStopping && s.Code() == codes.Canceled && errors.Is(c.err, ErrConnClosing):
		if ran != 0 || backRan != 0 {
			return "", fmt.Errorf("%s failed as the stopping side closed (%v), but its handler ran %d times, its call back's %d", what, c.err, ran, backRan)
		}
		return "closing", nil
	case fromStopping && c.spec.back != "" && s.Code() == codes.Unavailable && strings.Contains(s.Message(), "safe to retry"):
		if ran != 1 || backRan != 0 {
			return "", fmt.Errorf("%s: its call back was refused (%v), but its handler ran %d times, its call back's %d", what, c.err, ran, backRan)
		}
		return "back refused", nil
	case r.tr == mux.Smux && !fromStopping && s.Code() == codes.Unavailable:
		if ran != 0 || backRan != 0 {
			return "", fmt.Errorf("%s failed as its session ended (%v), but its handler ran %d times, its call back's %d", what, c.err, ran, backRan)
		}
		return "fate unknown, unrun", nil
	}
	return "", fmt.Errorf("%s: unexpected outcome %v (retry-safe %v; ran %d, call back ran %d)", what, c.err, IsRetrySafe(c.err), ran, backRan)
}

// stopUnderLoad runs the scenario for one stopping side: 600 calls held
// in the middle before the stop, 400 more started with it, and, until the
// stop returns, trickles of further calls from each side. stop begins the
// stop and returns once it has completed; towardStoppingIsUp says which
// way calls go to the stopping side.
func stopUnderLoad(t *testing.T, tr mux.Transport, towardStoppingIsUp bool, stop func(*stopRig) error, settle func(*stopRig)) {
	const clients = 4
	ctx := testCtx(t, 90*time.Second)
	seed := soakSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x5107))
	r := newStopRig(t, tr, clients)

	toward, from := "u", "d"
	if !towardStoppingIsUp {
		toward, from = "d", "u"
	}
	pre := append(plan(rng, 450, "pre-"+toward, towardStoppingIsUp, false, clients),
		plan(rng, 150, "pre-"+from, !towardStoppingIsUp, false, clients)...)
	racing := append(plan(rng, 300, "race-"+toward, towardStoppingIsUp, true, clients),
		plan(rng, 100, "race-"+from, !towardStoppingIsUp, true, clients)...)

	var calls sync.WaitGroup
	for _, c := range pre {
		calls.Go(func() { r.run(ctx, c) })
	}
	r.settled(t, pre, "every call to reach its handler")

	// The racing calls start within 30 ms, the stop 10 ms in.
	start := make(chan struct{})
	for _, c := range racing {
		d := time.Duration(rng.IntN(30_000)) * time.Microsecond
		calls.Go(func() {
			<-start
			time.Sleep(d)
			r.run(ctx, c)
		})
	}
	// Trickles: one worker per session and direction, calling until the
	// stop has returned.
	var stopped atomic.Bool
	var trickleMu sync.Mutex
	var trickles []*stopCall
	for w := range 2 * clients {
		up := w%2 == 0
		wrng := rand.New(rand.NewPCG(seed, uint64(w)))
		calls.Go(func() {
			<-start
			for i := 0; !stopped.Load(); i++ {
				c := &stopCall{spec: ledgerSpec{kind: callKinds[wrng.IntN(len(callKinds))], id: fmt.Sprintf("trickle%d-%d", w, i), n: 2, size: 64}, up: up, client: w / 2, racing: true}
				r.run(ctx, c)
				trickleMu.Lock()
				trickles = append(trickles, c)
				trickleMu.Unlock()
				time.Sleep(time.Duration(1+wrng.IntN(3)) * time.Millisecond)
			}
		})
	}
	close(start)
	time.Sleep(10 * time.Millisecond) // a third of the racing calls go out first
	began := time.Now()
	stopDone := async(func() error { return stop(r) })

	r.settled(t, racing, "every racing call to reach its handler or end")
	select {
	case err := <-stopDone:
		t.Fatalf("the stop returned (%v) while 600 calls were held in their handlers", err)
	case <-time.After(100 * time.Millisecond):
	}
	for _, c := range pre {
		if c.done.Load() {
			t.Errorf("%s %s ended while held, before the gate opened: %v", c.spec.kind, c.spec.id, c.err)
		}
	}
	opened := time.Now()
	r.open()
	if err := await(t, stopDone, 30*time.Second, "the stop to return once the gate opened"); err != nil {
		t.Fatalf("the stop: %v", err)
	}
	stopTook := time.Since(opened)
	stopped.Store(true)
	await(t, async(func() error { calls.Wait(); return nil }), 30*time.Second, "every call to end")
	settle(r)

	counts := map[string]int{}
	var problems []error
	for _, set := range [][]*stopCall{pre, racing, trickles} {
		for _, c := range set {
			fromStopping := c.up != towardStoppingIsUp
			class, err := r.judge(c, fromStopping)
			if err != nil {
				problems = append(problems, err)
				continue
			}
			dir := "toward the stopping side"
			if fromStopping {
				dir = "from the stopping side"
			}
			set := "held"
			if c.racing {
				set = "racing"
				if strings.HasPrefix(c.spec.id, "trickle") {
					set = "trickle"
				}
			}
			counts[fmt.Sprintf("%s %s: %s", set, dir, class)]++
		}
	}
	if len(problems) > 0 {
		for i := range r.clients {
			t.Logf("session %d: the client's error %v; the server's %v", i, r.clients[i].Err(), r.atServer[i].Err())
		}
	}
	for i, err := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-i)
			break
		}
		t.Error(err)
	}
	var lines []string
	for k, v := range counts {
		lines = append(lines, fmt.Sprintf("  %s: %d", k, v))
	}
	sort.Strings(lines)
	t.Logf("seed %d; %d held + %d racing + %d trickle calls; the stop took %v, %v of it after the gate opened; %d handler runs at the server, %d at the clients\n%s",
		seed, len(pre), len(racing), len(trickles), time.Since(began).Round(time.Millisecond), stopTook.Round(time.Millisecond),
		r.serverRuns.total.Load(), r.clientRuns.total.Load(), strings.Join(lines, "\n"))
}

// TestGracefulStopLosesNoCallAndRunsNoneTwice stops a server gracefully
// while four clients have 600 calls of every kind held in the middle of
// their handlers (450 to the server, 150 from the server back to the
// clients, a fifth of each calling back from inside the handler), while
// 400 more start within 30 ms of the stop, and while trickles of calls in
// both directions go on until it returns. GracefulStop returns only after
// the held calls were let go; every call then succeeded with the right
// answers and exactly one handler run (and one of its call back), or, if
// it started with the stop, failed with Unavailable and IsRetrySafe
// having run no handler, the unary ones after Invoke's own retry; the
// server's own calls racing its stop may instead fail with ErrConnClosing,
// unrun, and a call from the server whose handler's call back was refused
// fails with that status, its call back unrun. Nothing else, except on
// smux, which has no GoAway: there a client's call racing the session's
// close may fail Unavailable without being retry-safe, but unrun.
func TestGracefulStopLosesNoCallAndRunsNoneTwice(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		stopUnderLoad(t, tr, true, func(r *stopRig) error {
			r.srv.GracefulStop()
			return nil
		}, func(r *stopRig) {
			for _, p := range r.clients {
				await(t, p.Done(), 10*time.Second, "a client's session to end")
				p.Close() // waits for the client's handlers
			}
			eventually(t, 10*time.Second, "the server's sessions to be served no more", func() bool { return len(r.srv.Peers()) == 0 })
		})
	})
}

// TestPeerShutdownLosesNoCallAndRunsNoneTwice is the same from the other
// side: the four clients shut down gracefully with Peer.Shutdown while
// the server has 450 calls held in their callbacks, the clients 150 in
// the server's handlers, and 400 more and the trickles start with the
// stop. Every Shutdown returns nil once the held calls were let go, and
// every call ends as in TestGracefulStopLosesNoCallAndRunsNoneTwice.
func TestPeerShutdownLosesNoCallAndRunsNoneTwice(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		stopUnderLoad(t, tr, false, func(r *stopRig) error {
			errs := make([]error, len(r.clients))
			var wg sync.WaitGroup
			for i, p := range r.clients {
				wg.Go(func() { errs[i] = p.Shutdown(context.Background()) })
			}
			wg.Wait()
			return errors.Join(errs...)
		}, func(r *stopRig) {
			eventually(t, 10*time.Second, "the server's sessions to be served no more", func() bool { return len(r.srv.Peers()) == 0 })
		})
	})
}
