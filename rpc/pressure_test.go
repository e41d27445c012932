package rpc

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

// What the tests of hostile peers measure: an honest victim's latency
// before and during an attack, and what the process spends meanwhile in
// goroutines and heap. The attacker runs in the same process as the server
// it attacks, so every figure includes the attacker's own share; the
// bounds the tests state allow for it.

// latencies are the durations of a victim's calls.
type latencies []time.Duration

// quantile returns the q-quantile (0 < q < 1) of l, 0 for no samples.
func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (l latencies) String() string {
	return fmt.Sprintf("p50 %v, p90 %v, max %v over %d calls",
		l.quantile(0.5).Round(time.Microsecond), l.quantile(0.9).Round(time.Microsecond),
		l.quantile(0.9999).Round(time.Microsecond), len(l))
}

// Latency floors. A victim under attack may be 10 times slower than
// undisturbed, or up to these floors, whichever is more. The attacker
// shares the process, and so the machine's two cores, with the server and
// the victim, and -race slows every one of them 5-10x: a victim that
// waits for the scheduler or a collection of the attacker's garbage for a
// few milliseconds is not starved. The failures these tests look for are
// of another order: a victim that waits for a handshake timeout, a
// deadline, a freed slot or a window (seconds, or forever).
const (
	victimFloorP50 = 25 * time.Millisecond
	victimFloorP90 = 100 * time.Millisecond
	// victimMaxCall bounds every single call of a victim under attack: far
	// below the handshake timeouts and keepalives the attacks could make a
	// starved victim wait for.
	victimMaxCall = 3 * time.Second
)

// victim is an honest peer of a server under attack: call is one of its
// calls, whose latency is measured.
type victim struct {
	t           *testing.T
	name        string
	call        func(ctx context.Context) error
	undisturbed latencies
}

// newVictim measures call's undisturbed latency, over n calls after a
// few to warm up.
func newVictim(t *testing.T, name string, n int, call func(ctx context.Context) error) *victim {
	t.Helper()
	v := &victim{t: t, name: name, call: call}
	for range 10 {
		v.once()
	}
	for range n {
		v.undisturbed = append(v.undisturbed, v.once())
	}
	return v
}

// echoVictim is a victim whose call is a unary echo on p.
func echoVictim(t *testing.T, p *Peer, n int) *victim {
	t.Helper()
	return newVictim(t, "unary call", n, func(ctx context.Context) error { return echoCall(ctx, p) })
}

// echoCall makes one unary call through cc, which test.Echo named
// "server" must answer.
func echoCall(ctx context.Context, cc ClientConnInterface) error {
	out, err := echoClient{cc}.Unary(ctx, wrapperspb.String("ping"))
	if err == nil && out.Value != "server:ping" {
		err = fmt.Errorf("answered %q", out.Value)
	}
	return err
}

// once makes one call and returns how long it took; it fails the test
// if the call fails.
func (v *victim) once() time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 2*victimMaxCall)
	defer cancel()
	start := time.Now()
	err := v.call(ctx)
	d := time.Since(start)
	if err != nil {
		v.t.Errorf("the victim's %s failed after %v: %v", v.name, d, err)
	}
	return d
}

// during runs attack on the test's goroutine, and the victims' calls one
// after another meanwhile, at least minCalls of each, and returns each
// victim's latencies. attack may fail the test with Fatal.
func during(attack func(), minCalls int, victims ...*victim) []latencies {
	done := make(chan struct{})
	out := make([]latencies, len(victims))
	var wg sync.WaitGroup
	for i, v := range victims {
		wg.Go(func() { out[i] = v.until(done, minCalls) })
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(done)
			wg.Wait()
		}
	}
	defer stop()
	attack()
	stop()
	return out
}

// until makes calls one after another until done is closed, and at
// least minCalls of them, and returns their latencies. It stops early,
// once done is closed, if the test has failed.
func (v *victim) until(done <-chan struct{}, minCalls int) latencies {
	var l latencies
	for {
		select {
		case <-done:
			if len(l) >= minCalls || v.t.Failed() {
				return l
			}
		default:
		}
		l = append(l, v.once())
	}
}

// check fails the test unless the latencies under attack are within 10
// times the undisturbed ones, or the floors; it logs both.
func (v *victim) check(attacked latencies) {
	v.t.Helper()
	v.t.Logf("victim's %s undisturbed: %v", v.name, v.undisturbed)
	v.t.Logf("victim's %s under attack: %v", v.name, attacked)
	p50, p90 := attacked.quantile(0.5), attacked.quantile(0.9)
	if bound := max(10*v.undisturbed.quantile(0.5), victimFloorP50); p50 > bound {
		v.t.Errorf("the victim's %s: p50 %v under attack, bound %v (undisturbed p50 %v)", v.name, p50, bound, v.undisturbed.quantile(0.5))
	}
	if bound := max(10*v.undisturbed.quantile(0.9), victimFloorP90); p90 > bound {
		v.t.Errorf("the victim's %s: p90 %v under attack, bound %v (undisturbed p90 %v)", v.name, p90, bound, v.undisturbed.quantile(0.9))
	}
	if worst := slices.Max(attacked); worst > victimMaxCall {
		v.t.Errorf("a %s of the victim took %v under attack", v.name, worst)
	}
}

// usage samples the process's goroutines and heap in use while an attack
// runs, against a baseline taken after a collection.
type usage struct {
	baseGoroutines int
	baseHeap       uint64 // HeapInuse after a collection
	baseLive       int64  // HeapAlloc after that collection: live objects
	peakGoroutines atomic.Int64
	peakHeap       atomic.Uint64 // HeapInuse
	gcPercent      int           // the GOGC that done restores; 0: left alone
	stop           chan struct{}
	wg             sync.WaitGroup
}

// sampleUsage takes the baseline and samples every 10 ms until stopped.
// The baseline waits, a second at most, for the heap to stop shrinking:
// what an earlier test tore down may still be on its way out.
func sampleUsage() *usage {
	u := &usage{stop: make(chan struct{})}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		prev := ms.HeapAlloc
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc+256<<10 > prev {
			break
		}
	}
	u.baseGoroutines, u.baseHeap, u.baseLive = runtime.NumGoroutine(), ms.HeapInuse, int64(ms.HeapAlloc)
	// A collection starts once the heap is twice what the last one left
	// live (GOGC=100), 4 MiB at least, so garbage counts in HeapInuse up
	// to as much as is live. What earlier tests left live would raise
	// the peak by as much: the runtime keeps the descriptor of every
	// goroutine that ever ran, and a test of 1,000 sessions leaves 5 MiB
	// of them. Hold the goal to the baseline and 4 MiB, as in a fresh
	// process.
	if u.baseLive > 4<<20 {
		u.gcPercent = debug.SetGCPercent(int(100 * (4 << 20) / u.baseLive))
	}
	u.sample()
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-u.stop:
				return
			case <-tick.C:
				u.sample()
			}
		}
	}()
	return u
}

func (u *usage) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	g := int64(runtime.NumGoroutine())
	for p := u.peakGoroutines.Load(); g > p && !u.peakGoroutines.CompareAndSwap(p, g); p = u.peakGoroutines.Load() {
	}
	for p := u.peakHeap.Load(); ms.HeapInuse > p && !u.peakHeap.CompareAndSwap(p, ms.HeapInuse); p = u.peakHeap.Load() {
	}
}

// done stops the sampling, once.
func (u *usage) done() {
	select {
	case <-u.stop:
	default:
		close(u.stop)
		u.wg.Wait()
		if u.gcPercent != 0 {
			debug.SetGCPercent(u.gcPercent)
		}
	}
}

// goroutines returns the most goroutines seen beyond the baseline.
func (u *usage) goroutines() int { return int(u.peakGoroutines.Load()) - u.baseGoroutines }

// heap returns the most heap in use seen beyond the baseline.
func (u *usage) heap() int64 { return int64(u.peakHeap.Load()) - int64(u.baseHeap) }

// check stops the sampling and fails the test if the peaks exceed the
// bounds; it logs them.
func (u *usage) check(t *testing.T, what string, maxGoroutines int, maxHeap int64) {
	t.Helper()
	u.done()
	t.Logf("%s: up to %d goroutines (bound %d) and %.1f MiB of heap in use (bound %.1f MiB) beyond the baseline",
		what, u.goroutines(), maxGoroutines, mib(u.heap()), mib(maxHeap))
	if g := u.goroutines(); g > maxGoroutines {
		t.Errorf("%s: %d goroutines beyond the baseline, bound %d", what, g, maxGoroutines)
	}
	if h := u.heap(); h > maxHeap {
		t.Errorf("%s: %.1f MiB of heap in use beyond the baseline, bound %.1f MiB", what, mib(h), mib(maxHeap))
	}
}

// liveHeapNow returns the bytes of live heap objects, after a collection.
func liveHeapNow() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// long reports whether the long variants of the attack tests run: with
// MUXRPC_LONG=1. CI runs the short ones, which check the same bounds.
func long() bool { return os.Getenv("MUXRPC_LONG") == "1" }

// scaled returns short, or long in the long variants.
func scaled(short, long_ int) int {
	if long() {
		return long_
	}
	return short
}
