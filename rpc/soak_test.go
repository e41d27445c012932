package rpc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The soak: calls of every kind in both directions, callbacks from inside
// handlers, cancellations, deadlines and connection resets, from several
// workers at once, for a while. Every call must end with the right
// answers, or with a status that what happened to it explains; and
// afterwards the goroutines and the heap must be back where they started.

// soakSeed returns the seed of a test's random choices: MUXRPC_SOAK_SEED
// if set, to replay a run, else one from the clock. The test logs it.
func soakSeed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("MUXRPC_SOAK_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MUXRPC_SOAK_SEED=%q: %v", s, err)
		}
		return seed
	}
	return uint64(time.Now().UnixNano())
}

// soakDuration is how long the soak runs, over both transports: 20 s, or
// MUXRPC_SOAK (a time.ParseDuration value, "10m" say).
func soakDuration(t testing.TB) time.Duration {
	t.Helper()
	s := os.Getenv("MUXRPC_SOAK")
	if s == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("MUXRPC_SOAK=%q: want a positive duration such as 10m", s)
	}
	return d
}

// The soak's shape.
const (
	soakSessions      = 3  // client sessions, each redialled after its connection is reset
	soakClientWorkers = 12 // workers calling the server
	soakServerWorkers = 4  // workers calling the clients back, outside any handler
	soakHeapSlack     = 8 << 20
	soakCallTimeout   = 30 * time.Second // a call still running then has hung
)

// soakSlot is one client session, which the killer resets and redials.
type soakSlot struct {
	peer atomic.Pointer[Peer]
	conn atomic.Pointer[net.TCPConn]
}

// soakRig is a server and its client sessions, on one transport.
type soakRig struct {
	tr         mux.Transport
	addr       string
	srv        *Server
	callbacks  *Server
	slots      [soakSessions]soakSlot
	serverRuns *runLedger
	clientRuns *runLedger
	stats      *soakStats
	killed     sync.Map // *Peer -> struct{}: peers whose connection the killer resets, marked before it does
}

// soakStats counts what happened.
type soakStats struct {
	mu       sync.Mutex
	calls    map[string]int // by direction and kind
	outcomes map[string]int // by code, and what explains it
	problems []string
	maxCall  time.Duration
	kills    atomic.Int64
	redials  atomic.Int64
}

func (s *soakStats) record(call, outcome string, took time.Duration, problem error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[call]++
	s.outcomes[outcome]++
	s.maxCall = max(s.maxCall, took)
	if problem != nil && len(s.problems) < 30 {
		s.problems = append(s.problems, problem.Error())
	} else if problem != nil {
		s.problems[29] = fmt.Sprintf("... and more (latest: %v)", problem)
	}
}

// dial makes a client session on a connection of the test's own, so that
// the killer can reset it.
func (r *soakRig) dial(ctx context.Context, slot *soakSlot) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return err
	}
	sess, err := mux.Client(c, &mux.Config{Transport: r.tr})
	if err != nil {
		c.Close()
		return err
	}
	slot.conn.Store(c.(*net.TCPConn))
	slot.peer.Store(NewPeer(sess, WithServices(r.callbacks)))
	return nil
}

// reset ends a TCP connection with RST, as a crash or a middlebox would.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// soakCall is one call a worker makes, and what it does to the call.
type soakCall struct {
	spec     ledgerSpec
	timeout  time.Duration // a deadline for the call, 0 for none
	cancelIn time.Duration // cancel the call this long after it starts, 0 for never
}

// pick chooses a call at random: any kind, a quarter of them calling back
// from inside the handler, with 1 to 5 messages each way, mostly small
// and sometimes over a frame, handlers that answer at once or pause up
// to 20 ms; a fifth are cancelled before 30 ms, a fifth have a deadline
// of 5 to 40 ms, and a twentieth a deadline their handler outlasts.
func pick(rng *rand.Rand, id string) soakCall {
	s := ledgerSpec{kind: callKinds[rng.IntN(len(callKinds))], id: id, n: 1 + rng.IntN(5), size: rng.IntN(512)}
	if rng.IntN(20) == 0 {
		s.size = 64<<10 + rng.IntN(64<<10)
	}
	if rng.IntN(4) == 0 {
		s.back = callKinds[rng.IntN(len(callKinds))]
	}
	if rng.IntN(2) == 0 {
		s.delay = time.Duration(rng.IntN(20_000)) * time.Microsecond
	}
	c := soakCall{spec: s}
	switch p := rng.IntN(20); {
	case p < 4:
		c.cancelIn = time.Duration(1+rng.IntN(30_000)) * time.Microsecond
	case p < 8:
		c.timeout = time.Duration(5+rng.IntN(35)) * time.Millisecond
	case p < 9:
		c.timeout = time.Duration(5+rng.IntN(10)) * time.Millisecond
		c.spec.delay = 50 * time.Millisecond
	}
	return c
}

// call makes c through p, whose session is sess, to the side named name
// whose handlers keep runs (and whose callbacks keep backRuns), and
// records how it ended. replaced reports whether this side has closed p,
// after resetting its connection.
func (r *soakRig) call(p *Peer, c soakCall, dir, name string, runs, backRuns *runLedger, replaced func() bool) {
	ctx, cancel := context.WithTimeout(context.Background(), soakCallTimeout)
	defer cancel()
	var deadline time.Time
	if c.timeout > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, c.timeout)
		defer cancelT()
		deadline, _ = ctx.Deadline()
	}
	var cancelled atomic.Bool
	if c.cancelIn > 0 {
		var cancelC context.CancelFunc
		ctx, cancelC = context.WithCancel(ctx)
		t := time.AfterFunc(c.cancelIn, func() {
			cancelled.Store(true)
			cancelC()
		})
		defer t.Stop()
		defer cancelC()
	}
	began := time.Now()
	err := ledgerCall(ctx, p, c.spec, name)
	took := time.Since(began)
	_, ended := r.killed.Load(p)
	select {
	case <-p.Done():
		ended = true
	default:
	}
	outcome, problem := judgeSoak(c, err, took, soakCause{
		cancelled: cancelled.Load(),
		expired:   !deadline.IsZero() && !time.Now().Before(deadline.Add(-2*time.Millisecond)),
		ended:     ended,
		replaced:  replaced(),
	})
	id := c.spec.id
	ran := runs.runs(id)
	backRan := int32(0)
	if c.spec.back != "" {
		backRan = backRuns.runs(id + "/back")
	}
	switch {
	case problem != nil:
	case ran > 1 || backRan > 1:
		problem = fmt.Errorf("ran %d times, its call back %d", ran, backRan)
	case err == nil && (ran != 1 || c.spec.back != "" && backRan != 1):
		problem = fmt.Errorf("succeeded, but ran %d times, its call back %d", ran, backRan)
	case err != nil && IsRetrySafe(err) && (ran != 0 || backRan != 0):
		problem = fmt.Errorf("failed retry-safe (%v), but ran %d times, its call back %d", err, ran, backRan)
	}
	if problem == nil && (err == nil || IsRetrySafe(err)) {
		// Its handlers have all run, or never will: forget the call.
		runs.m.Delete(id)
		backRuns.m.Delete(id + "/back")
	}
	if problem != nil {
		problem = fmt.Errorf("%s %s %s (%d msgs of %d B, back %q, delay %v, timeout %v, cancel after %v) after %v: %w",
			r.tr, dir, c.spec.kind, c.spec.n, c.spec.size, c.spec.back, c.spec.delay, c.timeout, c.cancelIn, took.Round(time.Millisecond), problem)
	}
	r.stats.record(dir+" "+c.spec.kind, outcome, took, problem)
}

// soakCause is what happened to a call that may explain how it ended.
type soakCause struct {
	cancelled bool // its caller cancelled it
	expired   bool // its deadline has passed
	ended     bool // its session has ended: a connection was reset
	replaced  bool // its caller closed the peer, after resetting its connection
}

// judgeSoak returns the outcome of a call that ended with err, and what is
// wrong with it: a call ends OK with the right answers (ledgerCall checks
// them), Canceled once cancelled (or once its caller closed the peer,
// with ErrConnClosing), DeadlineExceeded once its deadline has passed,
// and Unavailable once its session has ended or, retry-safe, when the
// callee refused it. Nothing else: no Unknown, Internal or wrong data, no
// call that outlasts its bound.
func judgeSoak(c soakCall, err error, took time.Duration, why soakCause) (string, error) {
	if took >= soakCallTimeout-time.Second {
		return "hung", fmt.Errorf("hung: %v", err)
	}
	if err == nil {
		return "OK", nil
	}
	if errors.Is(err, errWrongAnswer) {
		return "wrong answer", err
	}
	s, ok := status.FromError(err)
	if !ok {
		return "no status", fmt.Errorf("an error without a status: %v (%T)", err, err)
	}
	switch code := s.Code(); {
	case code == codes.Canceled && why.cancelled:
		return "Canceled (cancelled)", nil
	case code == codes.Canceled && why.replaced && errors.Is(err, ErrConnClosing):
		return "Canceled (peer closed after a reset)", nil
	case code == codes.DeadlineExceeded && why.expired:
		return "DeadlineExceeded (deadline passed)", nil
	case code == codes.Unavailable && IsRetrySafe(err) && why.ended:
		return "Unavailable (retry-safe, session ended)", nil
	case code == codes.Unavailable && IsRetrySafe(err):
		return "Unavailable (retry-safe, refused)", nil
	case code == codes.Unavailable && why.ended:
		return "Unavailable (session ended)", nil
	}
	return s.Code().String() + " (unexplained)", fmt.Errorf("unexplained %v (retry-safe %v, %+v)", err, IsRetrySafe(err), why)
}

// soakOn runs the soak on one transport for d, and returns what it
// counted.
func soakOn(t *testing.T, tr mux.Transport, d time.Duration, seed uint64) *soakStats {
	r := &soakRig{
		tr:         tr,
		serverRuns: new(runLedger),
		clientRuns: new(runLedger),
		stats:      &soakStats{calls: map[string]int{}, outcomes: map[string]int{}},
	}
	r.srv = NewServer(muxOpt(tr))
	r.srv.RegisterService(&echoDesc, &ledgerEcho{name: "server", peerName: "client", runs: r.serverRuns})
	r.callbacks = NewServer()
	r.callbacks.RegisterService(&echoDesc, &ledgerEcho{name: "client", peerName: "server", runs: r.clientRuns})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	served := async(func() error { return r.srv.Serve(ln) })
	ctx := testCtx(t, d+time.Minute)
	for i := range r.slots {
		if err := r.dial(ctx, &r.slots[i]); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var workers sync.WaitGroup
	for w := range soakClientWorkers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		workers.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				slot := &r.slots[rng.IntN(len(r.slots))]
				p := slot.peer.Load()
				c := pick(rng, fmt.Sprintf("c%d-%d", w, i))
				r.call(p, c, "client→server", "server", r.serverRuns, r.clientRuns, func() bool { return slot.peer.Load() != p })
			}
		})
	}
	for w := range soakServerWorkers {
		rng := rand.New(rand.NewPCG(seed, uint64(100+w)))
		workers.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				peers := r.srv.Peers()
				if len(peers) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				sort.Slice(peers, func(i, j int) bool { return peers[i].RemoteAddr().String() < peers[j].RemoteAddr().String() })
				p := peers[rng.IntN(len(peers))]
				c := pick(rng, fmt.Sprintf("s%d-%d", w, i))
				r.call(p, c, "server→client", "client", r.clientRuns, r.serverRuns, func() bool { return false })
			}
		})
	}
	// The killer resets a connection every 100 to 600 ms, from either
	// end, and the client redials.
	killer := async(func() error {
		rng := rand.New(rand.NewPCG(seed, 999))
		for {
			select {
			case <-stop:
				return nil
			case <-time.After(time.Duration(100+rng.IntN(500)) * time.Millisecond):
			}
			slot := &r.slots[rng.IntN(len(r.slots))]
			old := slot.peer.Load()
			var atServer *Peer
			local := old.Session().LocalAddr().String()
			for _, sp := range r.srv.Peers() {
				if sp.RemoteAddr().String() == local {
					atServer = sp
				}
			}
			// Both ends' calls may fail from the moment of the reset on,
			// before either session has noticed.
			r.killed.Store(old, struct{}{})
			if atServer != nil {
				r.killed.Store(atServer, struct{}{})
			}
			if atServer != nil && rng.IntN(2) == 0 {
				reset(atServer.Session().Conn())
			} else {
				reset(slot.conn.Load())
			}
			r.stats.kills.Add(1)
			select {
			case <-old.Done():
			case <-time.After(10 * time.Second):
				return fmt.Errorf("a session whose connection was reset did not end")
			}
			if err := r.dial(ctx, slot); err != nil {
				return fmt.Errorf("redial: %w", err)
			}
			r.stats.redials.Add(1)
			old.Close()
		}
	})

	time.Sleep(d)
	close(stop)
	if err := await(t, killer, 20*time.Second, "the killer to stop"); err != nil {
		t.Error(err)
	}
	await(t, async(func() error { workers.Wait(); return nil }), soakCallTimeout+10*time.Second, "the workers to stop")
	for i := range r.slots {
		r.slots[i].peer.Load().Close()
	}
	r.srv.GracefulStop()
	if err := await(t, served, 10*time.Second, "Serve to return"); err != nil {
		t.Errorf("Serve: %v", err)
	}
	return r.stats
}

// TestSoakEveryCallEndsExplainedAndNothingLeaks runs the soak on each
// transport for half of 20 s (MUXRPC_SOAK sets the total; MUXRPC_SOAK_SEED
// replays a run's random choices): twelve workers call the server and
// four call the clients back, with calls of every kind, a quarter calling back
// from inside their handler, a fifth cancelled, a quarter with deadlines
// (some that their handler outlasts), while a killer resets one of the
// three client connections, from either end, every 100-600 ms, and the
// client redials. Every call ends with the right answers, or with a code
// its fate explains (Canceled after a cancel, DeadlineExceeded after its
// deadline, Unavailable once its session ended or retry-safe when
// refused), never later than its bound; no handler runs twice, a call
// that succeeded ran once and one that failed retry-safe not at all.
// Afterwards the goroutines are those of before (goleak), and the live
// heap after GC is within 8 MiB of where it started.
func TestSoakEveryCallEndsExplainedAndNothingLeaks(t *testing.T) {
	total := soakDuration(t)
	seed := soakSeed(t)
	t.Logf("soak of %v, seed %d (MUXRPC_SOAK_SEED=%d to replay)", total, seed, seed)
	leaks := goleak.IgnoreCurrent()
	g0 := runtime.NumGoroutine()
	heap0 := liveHeapNow()

	var peakG atomic.Int64
	var peakHeap atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := async(func() error {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stopSampling:
				return nil
			case <-tick.C:
			}
			peakG.Store(max(peakG.Load(), int64(runtime.NumGoroutine())))
			runtime.ReadMemStats(&ms)
			peakHeap.Store(max(peakHeap.Load(), ms.HeapAlloc))
		}
	})

	var all []*soakStats
	for i, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			st := soakOn(t, tr, total/time.Duration(len(transports)), seed+uint64(i))
			all = append(all, st)
			for _, p := range st.problems {
				t.Error(p)
			}
			t.Logf("%s: %d resets, %d redials, slowest call %v\n%s", tr, st.kills.Load(), st.redials.Load(), st.maxCall.Round(time.Millisecond), soakReport(st))
		})
	}
	close(stopSampling)
	<-sampled

	if err := goleak.Find(leaks); err != nil {
		t.Errorf("goroutines left behind: %v", err)
	}
	g1 := runtime.NumGoroutine()
	heap1 := liveHeapNow()
	t.Logf("goroutines: %d before, peak %d, %d after; live heap: %.1f MiB before, peak %.1f MiB (not collected), %.1f MiB after",
		g0, peakG.Load(), g1, mib(heap0), mib(int64(peakHeap.Load())), mib(heap1))
	if heap1 > heap0+soakHeapSlack {
		t.Errorf("the live heap grew from %.1f MiB to %.1f MiB, more than %d MiB", mib(heap0), mib(heap1), soakHeapSlack>>20)
	}
	for _, st := range all {
		if st.calls == nil || len(st.calls) < 8 {
			t.Errorf("the soak made too few kinds of call: %v", st.calls)
		}
	}
}

// soakReport lists calls by direction and kind, and outcomes.
func soakReport(st *soakStats) string {
	var b strings.Builder
	lines := func(m map[string]int) {
		keys := make([]string, 0, len(m))
		sum := 0
		for k, v := range m {
			keys = append(keys, k)
			sum += v
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %-45s %7d\n", k, m[k])
		}
		fmt.Fprintf(&b, "    %-45s %7d\n", "total", sum)
	}
	b.WriteString("  calls:\n")
	lines(st.calls)
	b.WriteString("  outcomes:\n")
	lines(st.outcomes)
	return b.String()
}
