package integration

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// service is the name the fleet registers under in etcd.
const service = "services/echo"

// startEtcd runs an embedded etcd on loopback ports, its data in a
// temporary directory, and returns a client of it.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop()) // its errors at Close are expected
	clientURL, peerURL := freeURL(t), freeURL(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL.String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// freeURL returns an http URL on a loopback port free a moment ago.
func freeURL(t *testing.T) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// register publishes s in etcd under a lease that it keeps alive until the
// returned function revokes it; a server that dies without revoking
// vanishes when the lease expires.
func register(t *testing.T, ctx context.Context, cli *clientv3.Client, s *fleetServer) (deregister func()) {
	t.Helper()
	em, err := endpoints.NewManager(cli, service)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	kctx, cancel := context.WithCancel(context.Background())
	if _, err := cli.KeepAlive(kctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, service+"/"+s.addr, endpoints.Endpoint{Addr: s.addr}, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	return func() {
		cancel()
		rctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		cli.Revoke(rctx, lease.ID)
	}
}

// TestEtcdFleet runs three muxrpc servers registered in a real etcd, and a
// Client that finds them through etcd's gRPC naming resolver: calls
// spread over all three; one killed under load loses no call and runs
// none twice; a fourth that registers takes calls; one in GracefulStop or
// NOT_SERVING takes no new ones; and throughout, each server's handlers
// call the client back on the session the call came in on.
func TestEtcdFleet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := startEtcd(t)
	var fleet []*fleetServer
	deregister := map[string]func(){}
	for i := range 3 {
		s := startFleetServer(t, fmt.Sprint("s", i), "127.0.0.1:0")
		fleet = append(fleet, s)
		deregister[s.name] = register(t, ctx, cli, s)
	}
	builder, err := etcdresolver.NewBuilder(cli)
	if err != nil {
		t.Fatal(err)
	}
	c, n := newFleetClient(t, "etcd:///"+service, rpc.WithResolvers(builder))
	untilAll(t, ctx, c, "s0", "s1", "s2")

	// Calls spread evenly: round robin over three ready sessions.
	counts := spread(t, ctx, c, 300)
	for _, s := range fleet {
		if counts[s.name] < 90 || counts[s.name] > 110 {
			t.Errorf("300 calls over 3 servers: %v, want 100 ± 10 each", counts)
			break
		}
	}
	checkCallbacks(t, ctx, c, n, "s0", "s1", "s2")

	// Kill s1 under load, without deregistering it: the Client learns it
	// from the session's end, long before the lease would expire.
	stop := make(chan struct{})
	results := make(chan loadResult, 1)
	go func() { results <- load(ctx, c, 16, 5*time.Second, stop) }()
	time.Sleep(300 * time.Millisecond)
	fleet[1].stop()
	time.Sleep(700 * time.Millisecond)
	close(stop)
	res := <-results
	t.Logf("load across the kill: %d succeeded, %d failed", res.ok, res.failed)
	for _, err := range res.failures {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("a call failed across the kill with %v, want Unavailable", err)
		}
		if rpc.IsRetrySafe(err) {
			t.Errorf("a call the Client could have moved failed: %v", err)
		}
	}
	if res.failed > 16 {
		t.Errorf("%d calls failed; at most the 16 in flight on the killed server may", res.failed)
	}
	ran := map[string]int{}
	for _, s := range fleet {
		for msg, k := range s.runs() {
			ran[msg] += k
		}
	}
	for msg, ok := range res.sent {
		switch {
		case ran[msg] > 1:
			t.Errorf("call %s ran %d times", msg, ran[msg])
		case ok && ran[msg] != 1:
			t.Errorf("call %s succeeded but ran %d times", msg, ran[msg])
		}
	}
	deregister["s1"]()
	for range 30 {
		if name := answeredBy(t, ctx, c, "after-kill"); name == "s1" {
			t.Fatal("a call reached the killed server")
		}
	}

	// A fourth server registers and takes calls.
	s3 := startFleetServer(t, "s3", "127.0.0.1:0")
	deregister["s3"] = register(t, ctx, cli, s3)
	start := time.Now()
	untilAll(t, ctx, c, "s3")
	t.Logf("the fourth server took its first call %v after registering", time.Since(start))
	checkCallbacks(t, ctx, c, n, "s3")

	// NOT_SERVING: s2 takes no new calls, then takes them again.
	fleet[2].setServing(false)
	time.Sleep(200 * time.Millisecond) // the watch's report reaches the Client
	for name := range spread(t, ctx, c, 60) {
		if name == "s2" {
			t.Fatal("a call reached a server reporting NOT_SERVING")
		}
	}
	fleet[2].setServing(true)
	untilAll(t, ctx, c, "s2")

	// GracefulStop: s0 takes no new calls; its calls in flight finish.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		fleet[0].srv.GracefulStop()
	}()
	select {
	case <-stopped:
	case <-time.After(fleetWait):
		t.Fatal("GracefulStop did not return")
	}
	for name := range spread(t, ctx, c, 60) {
		if name == "s0" {
			t.Fatal("a call reached a server after its GracefulStop")
		}
	}
	checkCallbacks(t, ctx, c, n, "s2", "s3")
}
