package etcddirectory_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/rpc/etcddirectory"
)

// TestLocator: a Locator's answers follow Locate's, in the same order,
// through joins, a move with two sessions, and a clean shutdown.
func TestLocator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := startEtcd(t)
	cli := newEtcdClient(t, endpoint)
	s0 := startHub(t, endpoint, "s0", etcddirectory.Options{TTL: ttl})
	s1 := startHub(t, endpoint, "s1", etcddirectory.Options{TTL: ttl})
	dialAgent(t, ctx, "before", s0.addr) // in the Locator's first read
	within(t, 2*time.Second, "before published", func() bool { return len(locatedAt(t, ctx, cli, "before")) == 1 })
	loc, err := etcddirectory.NewLocator(ctx, cli, "")
	if err != nil {
		t.Fatal(err)
	}
	defer loc.Close()
	// agrees reports whether the Locator answers as Locate does for
	// every name, and that answer is want's.
	agrees := func(want map[string][]string) func() bool {
		return func() bool {
			for name, ids := range want {
				got := loc.Locate(name)
				locs, err := etcddirectory.Locate(ctx, cli, "", name)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, locs) || len(got) != len(ids) {
					return false
				}
				for i, l := range got {
					if l.ServerID != ids[i] {
						return false
					}
				}
			}
			return true
		}
	}

	a := dialAgent(t, ctx, "a", s0.addr)
	dialAgent(t, ctx, "b", s1.addr)
	took := within(t, 2*time.Second, "the Locator sees the joins", agrees(map[string][]string{"before": {"s0"}, "a": {"s0"}, "b": {"s1"}}))
	t.Logf("the Locator agreed with Locate %v after the joins", took)

	dialAgent(t, ctx, "a", s1.addr)
	within(t, 2*time.Second, "the Locator sees a on s1, then s0", agrees(map[string][]string{"a": {"s1", "s0"}}))
	a.Close()
	within(t, 2*time.Second, "the Locator sees a on s1 alone", agrees(map[string][]string{"a": {"s1"}}))

	s1.shutdown(t)
	within(t, 2*time.Second, "the Locator sees s1 go", agrees(map[string][]string{"a": {}, "b": {}, "before": {"s0"}}))
}

// TestLocatorCompacted: a Locator cut off from etcd while the keys
// change, and etcd compacts the revisions it missed, reads the prefix
// again once it is back, since its watch cannot resume.
func TestLocatorCompacted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := startEtcd(t)
	cli := newEtcdClient(t, endpoint)
	s0 := startHub(t, endpoint, "s0", etcddirectory.Options{TTL: ttl})
	px, behind := startProxy(t, endpoint)
	loc, err := etcddirectory.NewLocator(ctx, newEtcdClient(t, behind), "")
	if err != nil {
		t.Fatal(err)
	}
	defer loc.Close()
	x := dialAgent(t, ctx, "x", s0.addr)
	within(t, 2*time.Second, "the Locator sees x", func() bool { return len(loc.Locate("x")) == 1 })

	// Two revisions, so that compacting at the second leaves the first,
	// where the Locator's watch would resume, compacted.
	px.setCut(true)
	x.Close()
	within(t, 2*time.Second, "x gone", func() bool { return len(locatedAt(t, ctx, cli, "x")) == 0 })
	dialAgent(t, ctx, "y", s0.addr)
	within(t, 2*time.Second, "y published", func() bool { return len(locatedAt(t, ctx, cli, "y")) == 1 })
	resp, err := cli.Get(ctx, "revision")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if len(loc.Locate("x")) != 1 || len(loc.Locate("y")) != 0 {
		t.Fatal("the Locator saw the changes while it was cut off")
	}
	px.setCut(false)
	took := within(t, 10*time.Second, "the Locator read the prefix again", func() bool {
		return len(loc.Locate("x")) == 0 && slices.Equal(loc.Locate("y"), []etcddirectory.Location{{ServerID: "s0", Address: s0.addr}})
	})
	t.Logf("the Locator caught up %v after it was reconnected", took)
}
