package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/dnsresolver"
)

// TestClientThroughDNS runs a Client on a dns: target whose SRV records,
// served by a DNS server in the test, name two servers: calls spread over
// both, and when the records change to name a third instead, calls move
// to it within the refresh interval, the old sessions retired.
func TestClientThroughDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startFleetServer(t, "a", "127.0.0.1:0")
	b := startFleetServer(t, "b", "127.0.0.1:0")
	z := startFleetServer(t, "z", "127.0.0.1:0")
	srv := startDNSServer(t)
	const name = "_echo._tcp.fleet.test"
	srv.set(t, "host.fleet.test", dns.TypeA, "host.fleet.test. 60 IN A 127.0.0.1")
	srv.set(t, name, dns.TypeSRV, srvRecord(t, name, a.addr), srvRecord(t, name, b.addr))
	c, n := newFleetClient(t, "dns://"+srv.addr+"/"+name,
		rpc.WithResolvers(dnsresolver.NewBuilder(dnsresolver.RefreshInterval(200*time.Millisecond))))
	untilAll(t, ctx, c, "a", "b")
	checkCallbacks(t, ctx, c, n, "a", "b")

	srv.set(t, name, dns.TypeSRV, srvRecord(t, name, z.addr))
	untilAll(t, ctx, c, "z")
	for name := range spread(t, ctx, c, 30) {
		if name != "z" {
			t.Fatalf("a call reached %s, which the records no longer name", name)
		}
	}
	deadline := time.Now().Add(fleetWait)
	for len(a.srv.Peers())+len(b.srv.Peers()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sessions to servers the records no longer name were not retired")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// srvRecord is an SRV record of name pointing at addr's port on
// host.fleet.test.
func srvRecord(t *testing.T, name, addr string) string {
	t.Helper()
	port := addr[strings.LastIndex(addr, ":")+1:]
	return name + ". 60 IN SRV 10 50 " + port + " host.fleet.test."
}

// TestClientThroughFlappingDNS runs a Client on records that flap between
// naming two servers and naming one, refreshed every 50 ms, under load:
// sessions to the server that comes and goes are opened and retired over
// and over, and no call fails.
func TestClientThroughFlappingDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startFleetServer(t, "a", "127.0.0.1:0")
	b := startFleetServer(t, "b", "127.0.0.1:0")
	srv := startDNSServer(t)
	const name = "_echo._tcp.flap.test"
	srv.set(t, "host.fleet.test", dns.TypeA, "host.fleet.test. 60 IN A 127.0.0.1")
	srv.cycle(t, name, dns.TypeSRV,
		[]string{srvRecord(t, name, a.addr), srvRecord(t, name, b.addr)},
		[]string{srvRecord(t, name, b.addr)})
	c, _ := newFleetClient(t, "dns://"+srv.addr+"/"+name,
		rpc.WithResolvers(dnsresolver.NewBuilder(dnsresolver.RefreshInterval(50*time.Millisecond))))
	untilAll(t, ctx, c, "b")
	stop := make(chan struct{})
	time.AfterFunc(1500*time.Millisecond, func() { close(stop) })
	res := load(ctx, c, 8, 5*time.Second, stop)
	t.Logf("%d calls succeeded, %d failed, %d SRV queries", res.ok, res.failed, srv.count(name, dns.TypeSRV))
	for _, err := range res.failures {
		t.Errorf("a call failed while the records flapped: %v", err)
	}
	if q := srv.count(name, dns.TypeSRV); q < 10 {
		t.Errorf("only %d SRV queries in 1.5 s at a 50 ms refresh: the records did not flap", q)
	}
}
