package etcddirectory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/etcddirectory"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ttl is the lease TTL of the tests: etcd's minimum with its default
// heartbeat and election timeout.
const ttl = 2 * time.Second

// TestFleet runs three servers publishing their Directories to one etcd,
// with 30 agents spread over them, each server serving a Hub that calls
// any agent, forwarding to the server etcd names when the agent is not
// its own. A call through any hub reaches the right agent; an agent that
// moves is found where it went, and calls during the move end with the
// right agent's answer or NotFound/Unavailable, never another's; a server
// that crashes has its entries vanish when its lease expires, and one
// that shuts down cleanly at once, while the others' stay.
func TestFleet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fleet := t // the agents that move live on after the subtest
	endpoint := startEtcd(t)
	cli := newEtcdClient(t, endpoint)
	var hubs []*hub
	var callers []*rpc.Peer
	for i := range 3 {
		h := startHub(t, endpoint, fmt.Sprint("s", i), etcddirectory.Options{TTL: ttl})
		hubs = append(hubs, h)
		callers = append(callers, dialHub(t, ctx, h.addr))
	}
	const n = 30
	agents := map[string]*rpc.Peer{}
	where := map[string]string{} // agent -> the ServerID that holds it
	for i := range n {
		name := agentName(i)
		agents[name] = dialAgent(t, ctx, name, hubs[i%3].addr)
		where[name] = hubs[i%3].id
	}
	// located reports whether Locate gives each agent where it is, and
	// nothing for those it is not anywhere.
	located := func() bool {
		for name, id := range where {
			var want []string
			if id != "" {
				want = []string{id}
			}
			if got := locatedAt(t, ctx, cli, name); !slices.Equal(got, want) {
				return false
			}
		}
		return true
	}
	took := within(t, 5*time.Second, "each agent located at its server", located)
	t.Logf("%d agents located at their servers %v after the last connected", n, took)

	t.Run("calls", func(t *testing.T) {
		for name, id := range where {
			for _, c := range callers {
				if got, err := callHub(ctx, c, name); err != nil || got != name+" via "+id {
					t.Fatalf("a call for %s answered %q, %v; want %q", name, got, err, name+" via "+id)
				}
			}
		}
	})

	t.Run("move", func(t *testing.T) {
		// agent-01 leaves s1 for s2, while s0's hub is called for it
		// without pause.
		name := agentName(1)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var right int
		gone := map[codes.Code]int{}
		var wrong []string
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := callHub(ctx, callers[0], name)
				switch {
				case err == nil && (got == name+" via s1" || got == name+" via s2"):
					right++
				case err != nil && isGone(err):
					gone[status.Code(err)]++
				default:
					wrong = append(wrong, fmt.Sprintf("%q, %v", got, err))
				}
			}
		})
		time.Sleep(50 * time.Millisecond)
		agents[name].Close()
		start := time.Now()
		agents[name] = dialAgent(fleet, ctx, name, hubs[2].addr)
		where[name] = "s2"
		within(t, 2*time.Second, "Locate gives s2 alone after the move", func() bool {
			return slices.Equal(locatedAt(t, ctx, cli, name), []string{"s2"})
		})
		t.Logf("the move showed in Locate %v after the agent left s1", time.Since(start))
		time.Sleep(50 * time.Millisecond)
		close(stop)
		wg.Wait()
		t.Logf("calls across the move: %d answered by the agent, %d NotFound, %d Unavailable", right, gone[codes.NotFound], gone[codes.Unavailable])
		if len(wrong) > 0 {
			t.Fatalf("calls across the move answered %v", wrong)
		}
		for _, c := range callers {
			if got, err := callHub(ctx, c, name); err != nil || got != name+" via s2" {
				t.Fatalf("after the move, a call for %s answered %q, %v", name, got, err)
			}
		}
	})

	t.Run("two sessions during a move", func(t *testing.T) {
		// agent-04 opens its new session on s2 before it closes its old
		// one on s1: both hold it, the newer first.
		name := agentName(4)
		old := agents[name]
		agents[name] = dialAgent(fleet, ctx, name, hubs[2].addr)
		within(t, 2*time.Second, "Locate gives s2, then s1", func() bool {
			return slices.Equal(locatedAt(t, ctx, cli, name), []string{"s2", "s1"})
		})
		if got, err := callHub(ctx, callers[0], name); err != nil || got != name+" via s2" {
			t.Fatalf("a call for %s held by s2 and s1 answered %q, %v; want the newest, s2", name, got, err)
		}
		old.Close()
		where[name] = "s2"
		within(t, 2*time.Second, "Locate gives s2 alone", func() bool {
			return slices.Equal(locatedAt(t, ctx, cli, name), []string{"s2"})
		})
	})

	t.Run("crash", func(t *testing.T) {
		var lost []string
		for name, id := range where {
			if id == "s1" {
				lost = append(lost, name)
			}
		}
		hubs[1].crash(t)
		crashed := time.Now()
		if got := locatedAt(t, ctx, cli, lost[0]); !slices.Equal(got, []string{"s1"}) {
			t.Fatalf("just after s1 crashed, %s is located at %v; its lease should still hold it at s1", lost[0], got)
		}
		// Until the lease expires, s0's hub forwards to the dead server.
		if _, err := callHub(ctx, callers[0], lost[0]); status.Code(err) != codes.Unavailable {
			t.Fatalf("just after s1 crashed, a call for its agent %s failed with %v, want Unavailable", lost[0], err)
		}
		for _, name := range lost {
			where[name] = ""
		}
		within(t, ttl+3*time.Second, "s1's entries vanish", func() bool {
			for _, name := range lost {
				if len(locatedAt(t, ctx, cli, name)) > 0 {
					return false
				}
			}
			return true
		})
		took := time.Since(crashed)
		t.Logf("%d entries of the crashed server vanished %v after it crashed (TTL %v)", len(lost), took, ttl)
		if took < ttl/2 {
			t.Errorf("s1's entries vanished %v after it crashed, sooner than its lease can expire", took)
		}
		if !located() {
			t.Fatal("the other servers' entries changed")
		}
		if _, err := callHub(ctx, callers[0], lost[0]); status.Code(err) != codes.NotFound {
			t.Fatalf("once its entries vanished, a call for an agent of the crashed server failed with %v, want NotFound", err)
		}
	})

	t.Run("clean shutdown", func(t *testing.T) {
		start := time.Now()
		hubs[2].shutdown(t)
		t.Logf("s2's Publish returned %v after its context ended", time.Since(start))
		for name, id := range where {
			if id == "s2" {
				if got := locatedAt(t, ctx, cli, name); len(got) > 0 {
					t.Errorf("%s still located at %v after its server shut down", name, got)
				}
				where[name] = ""
			}
		}
		if !located() {
			t.Fatal("s0's entries changed")
		}
	})
}

// TestDuplicateSessions: with KeepAll, a name has one key per server
// however many sessions the server lists under it, and the key goes only
// when the last of them leaves.
func TestDuplicateSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := startEtcd(t)
	cli := newEtcdClient(t, endpoint)
	h := startHub(t, endpoint, "s0", etcddirectory.Options{TTL: ttl})
	first := dialAgent(t, ctx, "dup", h.addr)
	second := dialAgent(t, ctx, "dup", h.addr)
	within(t, 2*time.Second, "dup located", func() bool { return slices.Equal(locatedAt(t, ctx, cli, "dup"), []string{"s0"}) })
	first.Close()
	within(t, 2*time.Second, "the server sees the first session go", func() bool { return len(h.srv.Directory().Lookup("dup")) == 1 })
	// Events are published in order: once a later join shows, the
	// first session's leave has been published too.
	dialAgent(t, ctx, "marker", h.addr)
	within(t, 2*time.Second, "marker located", func() bool { return len(locatedAt(t, ctx, cli, "marker")) == 1 })
	if got := locatedAt(t, ctx, cli, "dup"); !slices.Equal(got, []string{"s0"}) {
		t.Fatalf("with one of its two sessions left, dup is located at %v", got)
	}
	second.Close()
	within(t, 2*time.Second, "dup gone with its last session", func() bool { return len(locatedAt(t, ctx, cli, "dup")) == 0 })
}

// TestNamesWithSlashes: a name's key is escaped, so that "team" and
// "team/a" are two names, not a name and its server.
func TestNamesWithSlashes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := startEtcd(t)
	cli := newEtcdClient(t, endpoint)
	h0 := startHub(t, endpoint, "s/0", etcddirectory.Options{Prefix: "/fleet/", TTL: ttl})
	h1 := startHub(t, endpoint, "s1", etcddirectory.Options{Prefix: "/fleet", TTL: ttl})
	dialAgent(t, ctx, "team", h0.addr)
	dialAgent(t, ctx, "team/a", h1.addr)
	within(t, 2*time.Second, "both located", func() bool {
		a, err := etcddirectory.Locate(ctx, cli, "/fleet", "team")
		if err != nil {
			t.Fatal(err)
		}
		b, err := etcddirectory.Locate(ctx, cli, "/fleet", "team/a")
		if err != nil {
			t.Fatal(err)
		}
		return slices.Equal(a, []etcddirectory.Location{{ServerID: "s/0", Address: h0.addr}}) &&
			slices.Equal(b, []etcddirectory.Location{{ServerID: "s1", Address: h1.addr}})
	})
	if got := locatedAt(t, ctx, cli, "team"); len(got) > 0 {
		t.Errorf("under the default prefix, team is located at %v", got)
	}
}

// TestLeaseLost: when a server's lease goes (revoked here, as when it
// expires while the server is cut off from etcd), Publish gets a new one
// and publishes the whole Directory again, without the agents that left
// meanwhile.
func TestLeaseLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := startEtcd(t)
	cli := newEtcdClient(t, endpoint)
	errs := make(chan error, 16)
	h := startHub(t, endpoint, "s0", etcddirectory.Options{TTL: ttl, OnError: func(err error) {
		select {
		case errs <- err:
		default:
		}
	}})
	const n = 10
	agents := make([]*rpc.Peer, n)
	for i := range n {
		agents[i] = dialAgent(t, ctx, agentName(i), h.addr)
	}
	leaseOf := func(name string) clientv3.LeaseID {
		resp, err := cli.Get(ctx, etcddirectory.DefaultPrefix+"/"+name+"/s0")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return clientv3.NoLease
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	within(t, 2*time.Second, "every agent published", func() bool {
		for i := range n {
			if leaseOf(agentName(i)) == clientv3.NoLease {
				return false
			}
		}
		return true
	})
	old := leaseOf(agentName(0))
	if _, err := cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	agents[n-1].Close() // leaves while the lease is gone
	within(t, time.Second, "the server sees it leave", func() bool { return len(h.srv.Directory().Lookup(agentName(n-1))) == 0 })
	took := within(t, 5*time.Second, "the Directory published again", func() bool {
		for i := range n - 1 {
			if l := leaseOf(agentName(i)); l == clientv3.NoLease || l == old {
				return false
			}
		}
		return true
	})
	t.Logf("the Directory was published again under a new lease %v after the old one was revoked", took)
	if leaseOf(agentName(n-1)) != clientv3.NoLease {
		t.Errorf("%s, which left while the lease was lost, is published again", agentName(n-1))
	}
	select {
	case err := <-errs:
		if !errors.Is(err, etcddirectory.ErrLeaseLost) {
			t.Errorf("OnError was given %v, want ErrLeaseLost", err)
		}
	default:
		t.Error("OnError was not told of the lost lease")
	}
}

// TestEtcdRestart: while etcd is down, the Directory's changes wait,
// retried with backoff and reported to OnError. Down for longer than the
// TTL, the lease is lost to Publish: once etcd is back, with its data,
// Publish publishes the Directory under a new lease, and the key of an
// agent that left meanwhile, whose delete failed, goes with the old one.
func TestEtcdRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	clientURL, err := freeURL()
	if err != nil {
		t.Fatal(err)
	}
	peerURL, err := freeURL()
	if err != nil {
		t.Fatal(err)
	}
	e, err := embeddedEtcdAt(dir, clientURL, peerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() }) // after the hub's: its Publish revokes its lease
	cli := newEtcdClient(t, clientURL.String())
	var mu sync.Mutex
	var failures []error
	h := startHub(t, clientURL.String(), "s0", etcddirectory.Options{TTL: ttl, OnError: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, err)
	}})
	dialAgent(t, ctx, "stays", h.addr)
	leaves := dialAgent(t, ctx, "leaves", h.addr)
	within(t, 2*time.Second, "both published", func() bool {
		return len(locatedAt(t, ctx, cli, "stays")) == 1 && len(locatedAt(t, ctx, cli, "leaves")) == 1
	})
	leaseOf := func(name string) clientv3.LeaseID {
		resp, err := cli.Get(ctx, etcddirectory.DefaultPrefix+"/"+name+"/s0")
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("%s's key: %v", name, err)
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	old := leaseOf("stays")

	start := time.Now()
	e.Close()
	t.Logf("etcd closed in %v", time.Since(start))
	leaves.Close()
	dialAgent(t, ctx, "joins", h.addr)
	time.Sleep(2 * ttl) // the changes fail, and the lease runs out on the client's side
	start = time.Now()
	if e, err = embeddedEtcdAt(dir, clientURL, peerURL); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd started again in %v", time.Since(start))
	back := time.Now()
	within(t, 10*time.Second, "the changes made while etcd was down published", func() bool {
		return slices.Equal(locatedAt(t, ctx, cli, "stays"), []string{"s0"}) &&
			slices.Equal(locatedAt(t, ctx, cli, "joins"), []string{"s0"}) &&
			len(locatedAt(t, ctx, cli, "leaves")) == 0
	})
	published := time.Since(back)
	if leaseOf("stays") == old {
		t.Fatal("the Directory was published again under the lost lease")
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("published %v after etcd came back; OnError was told %v", published, failures)
	if !slices.ContainsFunc(failures, func(err error) bool { return errors.Is(err, etcddirectory.ErrLeaseLost) }) {
		t.Error("OnError was not told of the lost lease")
	}
}

// TestBatching: many joins at once share transactions, both when Publish
// starts on a full Directory and when agents arrive together; etcd's
// revision, which each transaction raises by one, counts them.
func TestBatching(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	endpoint := startEtcd(t)
	cli := newEtcdClient(t, endpoint)
	srv := rpc.NewServer(rpc.WithAuthenticator(agentAuth))
	served := serve(t, srv)
	const n = 400
	dialMany := func(from, to int) []*rpc.Peer {
		peers := make([]*rpc.Peer, to-from)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := from; i < to; i++ {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				p, err := rpc.Dial(ctx, served, rpc.WithSessionMetadata(metadata.Pairs("agent-id", fmt.Sprintf("agent-%04d", i))))
				if err != nil {
					t.Error(err)
					return
				}
				peers[i-from] = p
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		return peers
	}
	revision := func() int64 {
		resp, err := cli.Get(ctx, "revision")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	published := func(want int64) func() bool {
		return func() bool {
			resp, err := cli.Get(ctx, etcddirectory.DefaultPrefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			return resp.Count == want
		}
	}

	first := dialMany(0, n)
	defer closeAll(first)
	rev := revision()
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- etcddirectory.Publish(pctx, cli, srv.Directory(), etcddirectory.Options{ServerID: "s0", Address: served, TTL: ttl})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	took := within(t, 10*time.Second, "the Directory published", published(n))
	txns := revision() - rev // a lease's grant raises none
	t.Logf("a Directory of %d published in %v with %d revisions", n, took, txns)
	if limit := int64(n/128 + 4); txns > limit {
		t.Errorf("a Directory of %d took %d revisions to publish, want at most %d", n, txns, limit)
	}

	rev = revision()
	start := time.Now()
	second := dialMany(n, 2*n)
	defer closeAll(second)
	within(t, 10*time.Second, "the arrivals published", published(2*n))
	txns = revision() - rev
	t.Logf("%d agents dialling 32 at a time published in %v with %d revisions", n, time.Since(start), txns)
	if txns > n/4 {
		t.Errorf("%d agents joining took %d transactions, want at most %d", n, txns, n/4)
	}

	rev = revision()
	start = time.Now()
	closeAll(first)
	within(t, 10*time.Second, "the departures published", published(n))
	txns = revision() - rev
	t.Logf("%d agents leaving together published in %v with %d revisions", n, time.Since(start), txns)
	if txns > n/4 {
		t.Errorf("%d agents leaving took %d transactions, want at most %d", n, txns, n/4)
	}
}

// TestOptions: Publish refuses to start without a ServerID.
func TestOptions(t *testing.T) {
	err := etcddirectory.Publish(context.Background(), nil, rpc.NewServer().Directory(), etcddirectory.Options{})
	if err == nil {
		t.Fatal("Publish without a ServerID returned nil")
	}
}
