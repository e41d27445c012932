package integration

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/resolver"

	"github.com/muxrpc/muxrpc/rpc/dnsresolver"
)

// ccEvent is one call the resolver made on its ClientConn.
type ccEvent struct {
	addrs []string // UpdateState's addresses, sorted
	err   error    // ReportError's error
}

// recordingCC is the resolver.ClientConn of the tests: it sends what it
// is given on events, and answers UpdateState with the errors in
// updateErrs, one a call, while there are any.
type recordingCC struct {
	resolver.ClientConn // nil: the resolver must call nothing else
	events              chan ccEvent

	mu         sync.Mutex
	updateErrs []error
}

func newRecordingCC() *recordingCC {
	return &recordingCC{events: make(chan ccEvent, 1000)}
}

func (c *recordingCC) UpdateState(s resolver.State) error {
	var addrs []string
	for _, a := range s.Addresses {
		addrs = append(addrs, a.Addr)
	}
	slices.Sort(addrs)
	c.events <- ccEvent{addrs: addrs}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.updateErrs) > 0 {
		err := c.updateErrs[0]
		c.updateErrs = c.updateErrs[1:]
		return err
	}
	return nil
}

func (c *recordingCC) ReportError(err error) {
	if err == nil {
		panic("ReportError(nil)")
	}
	c.events <- ccEvent{err: err}
}

// next returns the next event, failing the test if none comes within d.
func (c *recordingCC) next(t *testing.T, d time.Duration) ccEvent {
	t.Helper()
	select {
	case e := <-c.events:
		return e
	case <-time.After(d):
		t.Fatalf("no UpdateState or ReportError within %v", d)
		return ccEvent{}
	}
}

// nextUpdate returns the next event, failing the test if none comes
// within d or it is an error.
func (c *recordingCC) nextUpdate(t *testing.T, d time.Duration) []string {
	t.Helper()
	e := c.next(t, d)
	if e.err != nil {
		t.Fatalf("ReportError(%v), want UpdateState", e.err)
	}
	return e.addrs
}

// nextError returns the next event's error, failing the test if none
// comes within d or it is an update.
func (c *recordingCC) nextError(t *testing.T, d time.Duration) error {
	t.Helper()
	e := c.next(t, d)
	if e.err == nil {
		t.Fatalf("UpdateState(%v), want ReportError", e.addrs)
	}
	return e.err
}

// quiet fails the test if an event comes within d.
func (c *recordingCC) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e := <-c.events:
		t.Fatalf("unexpected event within %v: addresses %v, error %v", d, e.addrs, e.err)
	case <-time.After(d):
	}
}

// build builds a resolver of target, closed at the end of the test.
func build(t *testing.T, target string, cc resolver.ClientConn, opts ...dnsresolver.Option) resolver.Resolver {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", target, err)
	}
	r, err := dnsresolver.NewBuilder(opts...).Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatalf("Build(%q): %v", target, err)
	}
	t.Cleanup(r.Close)
	return r
}

const wait = 5 * time.Second // the bound of waits for what should come soon

func TestDNSAAndAAAA(t *testing.T) {
	srv := startDNSServer(t)
	srv.set(t, "api.test", dns.TypeA, "api.test. 60 IN A 10.0.0.1", "api.test. 60 IN A 10.0.0.2")
	srv.set(t, "api.test", dns.TypeAAAA, "api.test. 60 IN AAAA 2001:db8::1")
	cc := newRecordingCC()
	build(t, "dns://"+srv.addr+"/api.test:50051", cc)
	got := cc.nextUpdate(t, wait)
	want := []string{"10.0.0.1:50051", "10.0.0.2:50051", "[2001:db8::1]:50051"}
	if !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
}

func TestDNSSRV(t *testing.T) {
	srv := startDNSServer(t)
	srv.set(t, "_api._tcp.svc.test", dns.TypeSRV,
		"_api._tcp.svc.test. 60 IN SRV 10 50 7001 a.svc.test.",
		"_api._tcp.svc.test. 60 IN SRV 20 50 7002 b.svc.test.")
	srv.set(t, "a.svc.test", dns.TypeA, "a.svc.test. 60 IN A 10.0.1.1")
	srv.set(t, "b.svc.test", dns.TypeA, "b.svc.test. 60 IN A 10.0.1.2")
	srv.set(t, "b.svc.test", dns.TypeAAAA, "b.svc.test. 60 IN AAAA 2001:db8::2")
	cc := newRecordingCC()
	build(t, "dns://"+srv.addr+"/_api._tcp.svc.test", cc)
	got := cc.nextUpdate(t, wait)
	want := []string{"10.0.1.1:7001", "10.0.1.2:7002", "[2001:db8::2]:7002"}
	if !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
}

// A host without port and without SRV records: its A records at 443.
func TestDNSNoSRVFallback(t *testing.T) {
	srv := startDNSServer(t)
	srv.set(t, "plain.test", dns.TypeA, "plain.test. 60 IN A 10.0.0.9")
	cc := newRecordingCC()
	build(t, "dns://"+srv.addr+"/plain.test", cc)
	if got, want := cc.nextUpdate(t, wait), []string{"10.0.0.9:443"}; !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	if srv.count("plain.test", dns.TypeSRV) == 0 {
		t.Fatal("no SRV query before the fallback")
	}
}

// An answer too big for UDP comes truncated; the resolver gets it whole
// over TCP.
func TestDNSTCPFallback(t *testing.T) {
	srv := startDNSServer(t)
	var rrs, want []string
	for i := range 200 {
		ip := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
		rrs = append(rrs, "big.test. 60 IN A "+ip)
		want = append(want, ip+":80")
	}
	slices.Sort(want)
	srv.set(t, "big.test", dns.TypeA, rrs...)
	cc := newRecordingCC()
	build(t, "dns://"+srv.addr+"/big.test:80", cc)
	if got := cc.nextUpdate(t, wait); !slices.Equal(got, want) {
		t.Fatalf("%d addresses, want %d", len(got), len(want))
	}
	if srv.tcpCount() == 0 {
		t.Fatal("no query over TCP")
	}
}

func TestDNSRefresh(t *testing.T) {
	srv := startDNSServer(t)
	srv.set(t, "api.test", dns.TypeA, "api.test. 60 IN A 10.0.0.1")
	cc := newRecordingCC()
	build(t, "dns://"+srv.addr+"/api.test:80", cc, dnsresolver.RefreshInterval(200*time.Millisecond))
	if got := cc.nextUpdate(t, wait); !slices.Equal(got, []string{"10.0.0.1:80"}) {
		t.Fatalf("addresses %v, want 10.0.0.1:80", got)
	}
	srv.set(t, "api.test", dns.TypeA, "api.test. 60 IN A 10.0.0.2")
	start := time.Now()
	if got := cc.nextUpdate(t, wait); !slices.Equal(got, []string{"10.0.0.2:80"}) {
		t.Fatalf("addresses %v, want 10.0.0.2:80", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the change took %v to show, with a refresh interval of 200ms", d)
	}
	// The same answer again and again: no UpdateState.
	before := srv.count("api.test", dns.TypeA)
	cc.quiet(t, time.Second)
	if n := srv.count("api.test", dns.TypeA) - before; n < 3 || n > 7 {
		t.Fatalf("%d A queries in 1s with a refresh interval of 200ms, want about 5", n)
	}
}

func TestDNSResolveNow(t *testing.T) {
	srv := startDNSServer(t)
	srv.set(t, "api.test", dns.TypeA, "api.test. 60 IN A 10.0.0.1")
	cc := newRecordingCC()
	r := build(t, "dns://"+srv.addr+"/api.test:80", cc,
		dnsresolver.RefreshInterval(time.Hour), dnsresolver.MinResolveInterval(200*time.Millisecond))
	cc.nextUpdate(t, wait)
	time.Sleep(300 * time.Millisecond) // past the minimum interval

	srv.set(t, "api.test", dns.TypeA, "api.test. 60 IN A 10.0.0.2")
	start := time.Now()
	r.ResolveNow(resolver.ResolveNowOptions{})
	if got := cc.nextUpdate(t, wait); !slices.Equal(got, []string{"10.0.0.2:80"}) {
		t.Fatalf("addresses %v, want 10.0.0.2:80", got)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("ResolveNow took %v to bring the change", d)
	}

	// A burst: all of it coalesces, at most into one resolution now and
	// one at the minimum interval after it.
	time.Sleep(300 * time.Millisecond)
	before := srv.count("api.test", dns.TypeA)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { r.ResolveNow(resolver.ResolveNowOptions{}) })
	}
	wg.Wait()
	cc.quiet(t, time.Second)
	if n := srv.count("api.test", dns.TypeA) - before; n < 1 || n > 2 {
		t.Fatalf("100 ResolveNow calls made %d A queries, want 1 or 2", n)
	}

	// With the default minimum interval of 1s, back-to-back requests
	// wait for it.
	cc2 := newRecordingCC()
	r2 := build(t, "dns://"+srv.addr+"/api.test:80", cc2, dnsresolver.RefreshInterval(time.Hour))
	cc2.nextUpdate(t, wait)
	before = srv.count("api.test", dns.TypeA)
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		r2.ResolveNow(resolver.ResolveNowOptions{})
		time.Sleep(time.Millisecond)
	}
	if n := srv.count("api.test", dns.TypeA) - before; n < 1 || n > 2 {
		t.Fatalf("ResolveNow in a loop for 1.5s made %d A queries, want 1 or 2", n)
	}
}

func TestDNSNXDOMAIN(t *testing.T) {
	srv := startDNSServer(t)
	cc := newRecordingCC()
	build(t, "dns://"+srv.addr+"/missing.test:80", cc)
	err := cc.nextError(t, wait)
	t.Log(err)
	for _, want := range []string{`"missing.test"`, srv.addr, "no such host"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	// Retries with backoff, 1s then 2s: 2 resolutions in 2s, not a loop.
	time.Sleep(2 * time.Second)
	if n := srv.count("missing.test", dns.TypeA); n < 2 || n > 3 {
		t.Fatalf("%d A queries in 2s for a missing name, want 2 or 3", n)
	}
	cc.nextError(t, wait) // the retry's
}

// After failures, the first success is reported, and the backoff ends.
func TestDNSRecovery(t *testing.T) {
	srv := startDNSServer(t)
	cc := newRecordingCC()
	build(t, "dns://"+srv.addr+"/late.test:80", cc, dnsresolver.RefreshInterval(300*time.Millisecond))
	cc.nextError(t, wait)
	cc.nextError(t, wait)
	srv.set(t, "late.test", dns.TypeA, "late.test. 60 IN A 10.0.0.3")
	for {
		e := cc.next(t, wait)
		if e.err == nil {
			if !slices.Equal(e.addrs, []string{"10.0.0.3:80"}) {
				t.Fatalf("addresses %v, want 10.0.0.3:80", e.addrs)
			}
			break
		}
	}
	cc.quiet(t, time.Second)
}

func TestDNSNoAnswer(t *testing.T) {
	bh := startBlackhole(t)
	cc := newRecordingCC()
	start := time.Now()
	build(t, "dns://"+bh.addr+"/slow.test:80", cc, dnsresolver.ResolveTimeout(300*time.Millisecond))
	err := cc.nextError(t, wait)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the error took %v, with a resolve timeout of 300ms", d)
	}
	t.Log(err)
	for _, want := range []string{`"slow.test"`, bh.addr, "timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	time.Sleep(2 * time.Second)
	// Each resolution sends an A and an AAAA query, perhaps twice.
	if n := bh.queries.Load(); n < 4 || n > 12 {
		t.Fatalf("%d queries in about 2.3s to a server that never answers, want 4 to 12", n)
	}
}

func TestDNSUpdateStateError(t *testing.T) {
	srv := startDNSServer(t)
	srv.set(t, "api.test", dns.TypeA, "api.test. 60 IN A 10.0.0.1")
	cc := newRecordingCC()
	cc.updateErrs = []error{errors.New("rejected"), errors.New("rejected again")}
	build(t, "dns://"+srv.addr+"/api.test:80", cc, dnsresolver.RefreshInterval(300*time.Millisecond))
	for range 3 {
		if got := cc.nextUpdate(t, wait); !slices.Equal(got, []string{"10.0.0.1:80"}) {
			t.Fatalf("addresses %v, want 10.0.0.1:80", got)
		}
	}
	cc.quiet(t, time.Second) // accepted: the unchanged answer is not sent again
}

func TestDNSFlapping(t *testing.T) {
	srv := startDNSServer(t)
	srv.cycle(t, "flap.test", dns.TypeA,
		[]string{"flap.test. 60 IN A 10.0.0.1"},
		[]string{"flap.test. 60 IN A 10.0.0.2", "flap.test. 60 IN A 10.0.0.3"})
	cc := newRecordingCC()
	r := build(t, "dns://"+srv.addr+"/flap.test:80", cc,
		dnsresolver.RefreshInterval(20*time.Millisecond), dnsresolver.MinResolveInterval(10*time.Millisecond))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				r.ResolveNow(resolver.ResolveNowOptions{})
				time.Sleep(time.Millisecond)
			}
		}
	})
	var prev []string
	for i := range 10 {
		got := cc.nextUpdate(t, wait)
		if slices.Equal(got, prev) {
			t.Fatalf("update %d repeats %v", i, got)
		}
		if !slices.Equal(got, []string{"10.0.0.1:80"}) && !slices.Equal(got, []string{"10.0.0.2:80", "10.0.0.3:80"}) {
			t.Fatalf("update %d: addresses %v", i, got)
		}
		prev = got
	}
	close(stop)
	wg.Wait()
	r.Close()
	r.Close() // twice is fine
}

func TestDNSBadTargets(t *testing.T) {
	b := dnsresolver.NewBuilder()
	if b.Scheme() != "dns" {
		t.Fatalf("Scheme() = %q", b.Scheme())
	}
	for _, u := range []url.URL{
		{Scheme: "dns", Path: "/"},
		{Scheme: "dns", Path: "/:80"},
		{Scheme: "dns", Path: "/api.test:"},
		{Scheme: "dns", Path: "/api.test:99999"},
		{Scheme: "dns", Path: "/api.test:http"},
		{Scheme: "dns", Path: "/[::1"},
		{Scheme: "dns", Host: "[::1", Path: "/api.test:80"},
		{Scheme: "dns", Host: "127.0.0.1:0", Path: "/api.test:80"},
		{Scheme: "dns", Path: "/bad name.test:80"},
		{Scheme: "dns", Opaque: "a:b:c"},
	} {
		cc := newRecordingCC()
		r, err := b.Build(resolver.Target{URL: u}, cc, resolver.BuildOptions{})
		if err == nil {
			r.Close()
			t.Errorf("Build(%s): no error", u.String())
			continue
		}
		if !strings.HasPrefix(err.Error(), "dnsresolver: target ") {
			t.Errorf("Build(%s): error %q does not name the target", u.String(), err)
		}
		if len(cc.events) != 0 {
			t.Errorf("Build(%s) failed but called the ClientConn", u.String())
		}
	}
}

// Close cancels a lookup under way: it does not wait for the timeout.
func TestDNSCloseDuringLookup(t *testing.T) {
	bh := startBlackhole(t)
	cc := newRecordingCC()
	u := url.URL{Scheme: "dns", Host: bh.addr, Path: "/slow.test:80"}
	r, err := dnsresolver.NewBuilder().Build(resolver.Target{URL: u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(wait); bh.queries.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no query within %v", wait)
		}
	}
	start := time.Now()
	r.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v during a lookup", d)
	}
	if len(cc.events) != 0 {
		t.Fatalf("a closed resolver reported %v", <-cc.events)
	}
}

// Without authority, the system resolver; localhost is in every hosts file.
func TestDNSSystemResolver(t *testing.T) {
	cc := newRecordingCC()
	build(t, "dns:///localhost:8080", cc)
	got := cc.nextUpdate(t, wait)
	if !slices.Contains(got, "127.0.0.1:8080") && !slices.Contains(got, "[::1]:8080") {
		t.Fatalf("localhost:8080 resolved to %v", got)
	}
}

// An IP literal needs no DNS: its address comes before Build returns.
func TestDNSIPLiteral(t *testing.T) {
	bh := startBlackhole(t)
	cc := newRecordingCC()
	build(t, "dns://"+bh.addr+"/[2001:db8::7]:9000", cc)
	select {
	case e := <-cc.events:
		if !slices.Equal(e.addrs, []string{"[2001:db8::7]:9000"}) {
			t.Fatalf("addresses %v, error %v", e.addrs, e.err)
		}
	default:
		t.Fatal("no UpdateState before Build returned")
	}
	cc.quiet(t, 200*time.Millisecond)
	if n := bh.queries.Load(); n != 0 {
		t.Fatalf("%d DNS queries for an IP literal", n)
	}
}
