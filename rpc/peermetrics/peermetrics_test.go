package peermetrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/peermetrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo answers Unary and echoes each message of a Bidi stream.
type echo struct{ echov1.UnimplementedEchoServer }

func (echo) Unary(_ context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: in.Message}, nil
}

func (echo) Bidi(s rpc.BidiStreamingServer[echov1.EchoRequest, echov1.EchoResponse]) error {
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&echov1.EchoResponse{Message: in.Message}); err != nil {
			return err
		}
	}
}

// newServer returns a Server of echo that names each peer by its session
// metadata's "name", serving on a listener of network until the test
// ends, and the address to dial.
func newServer(t testing.TB, network string, cfg *mux.Config) (*rpc.Server, string) {
	t.Helper()
	srv := rpc.NewServer(rpc.MuxConfig(cfg), rpc.WithAuthenticator(func(_ context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		var id rpc.Identity
		if v := h.Metadata.Get("name"); len(v) > 0 {
			id.Name = v[0]
		}
		return id, nil
	}))
	echov1.RegisterEchoServer(srv, echo{})
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	if network == "unix" {
		return srv, "unix:" + addr
	}
	return srv, ln.Addr().String()
}

// dial connects to addr as name ("" for anonymous), serving echo as
// callbacks; the Peer closes when the test ends.
func dial(t testing.TB, addr, name string, cfg *mux.Config) *rpc.Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	callbacks := rpc.NewServer()
	echov1.RegisterEchoServer(callbacks, echo{})
	opts := []rpc.DialOption{rpc.MuxConfig(cfg), rpc.WithServices(callbacks)}
	if name != "" {
		opts = append(opts, rpc.WithSessionMetadata(metadata.Pairs("name", name)))
	}
	p, err := rpc.Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// eventually polls cond until it holds, failing the test after 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// peerNamed returns srv's peer of Identity name.
func peerNamed(t testing.TB, srv *rpc.Server, name string) *rpc.Peer {
	t.Helper()
	var found *rpc.Peer
	eventually(t, "the server's peer "+name, func() bool {
		for _, p := range srv.Peers() {
			if p.Identity().Name == name {
				found = p
			}
		}
		return found != nil
	})
	return found
}

// held is a Bidi call held open: one message sent and its echo read.
func held(t testing.TB, ctx context.Context, cc rpc.ClientConnInterface) rpc.BidiStreamingClient[echov1.EchoRequest, echov1.EchoResponse] {
	t.Helper()
	s, err := echov1.NewEchoClient(cc).Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&echov1.EchoRequest{Message: "hold"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	return s
}

// released ends a held call.
func released(t testing.TB, s rpc.BidiStreamingClient[echov1.EchoRequest, echov1.EchoResponse]) {
	t.Helper()
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("a held call ended with %v", err)
	}
}

// idle waits until each client's counters match its server peer's.
func idle(t testing.TB, pairs ...[2]*rpc.Peer) {
	t.Helper()
	eventually(t, "the byte counters to settle", func() bool {
		for _, p := range pairs {
			c, s := p[0].Stats(), p[1].Stats()
			if c.BytesSent != s.BytesReceived || s.BytesSent != c.BytesReceived {
				return false
			}
		}
		return true
	})
}

var (
	metricNames = []string{
		"muxrpc_peers",
		"muxrpc_peer_streams_open",
		"muxrpc_peer_calls_in_flight",
		"muxrpc_peer_bytes_sent_total",
		"muxrpc_peer_bytes_received_total",
		"muxrpc_peer_started_timestamp_seconds",
	}
	help = map[string]string{
		"muxrpc_peers":                          "Number of peers connected to the server whose sessions it admitted.",
		"muxrpc_peer_streams_open":              "Streams open on the peer's session, in both directions.",
		"muxrpc_peer_calls_in_flight":           `Calls in flight on the peer's session: direction "out" for those the server made to the peer, "in" for those it serves.`,
		"muxrpc_peer_bytes_sent_total":          "Bytes the server wrote to the peer's connection, framing included.",
		"muxrpc_peer_bytes_received_total":      "Bytes the server read from the peer's connection, framing included.",
		"muxrpc_peer_started_timestamp_seconds": "When the peer's session began, in seconds since the Unix epoch.",
	}
	kind = map[string]string{"muxrpc_peer_bytes_sent_total": "counter", "muxrpc_peer_bytes_received_total": "counter"}
)

// expected renders, in the text exposition format, what the collector
// should export for peers, from their Stats.
func expected(peers ...*rpc.Peer) string {
	lines := map[string][]string{}
	lines["muxrpc_peers"] = []string{fmt.Sprintf("muxrpc_peers %d", len(peers))}
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, p := range peers {
		st := p.Stats()
		l := fmt.Sprintf(`identity=%q,peer=%q`, st.Identity.Name, st.RemoteAddr.String())
		add := func(name, labels, v string) {
			lines[name] = append(lines[name], fmt.Sprintf("%s{%s} %s", name, labels, v))
		}
		add("muxrpc_peer_streams_open", l, strconv.Itoa(st.StreamsOpen))
		add("muxrpc_peer_calls_in_flight", `direction="in",`+l, strconv.Itoa(st.CallsIn))
		add("muxrpc_peer_calls_in_flight", `direction="out",`+l, strconv.Itoa(st.CallsOut))
		add("muxrpc_peer_bytes_sent_total", l, f(float64(st.BytesSent)))
		add("muxrpc_peer_bytes_received_total", l, f(float64(st.BytesReceived)))
		add("muxrpc_peer_started_timestamp_seconds", l, f(float64(st.Started.UnixNano())/1e9))
	}
	var b strings.Builder
	for _, name := range metricNames {
		k := kind[name]
		if k == "" {
			k = "gauge"
		}
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help[name], name, k)
		for _, line := range lines[name] {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// TestCollector exports two peers, one making a call to the server and
// one the server calls, and compares every series with the peers'
// Stats; then one peer leaves and its series vanish.
func TestCollector(t *testing.T) {
	for _, tr := range []mux.Transport{mux.Native, mux.Smux} {
		t.Run(tr.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg := &mux.Config{Transport: tr}
			begin := time.Now()
			srv, addr := newServer(t, "tcp", cfg)
			a, b := dial(t, addr, "agent-a", cfg), dial(t, addr, "agent-b", cfg)
			sa, sb := peerNamed(t, srv, "agent-a"), peerNamed(t, srv, "agent-b")
			c := peermetrics.NewCollector(srv)

			// Bytes that a call moves.
			payload := strings.Repeat("p", 32<<10)
			if _, err := echov1.NewEchoClient(a).Unary(ctx, &echov1.EchoRequest{Message: payload}); err != nil {
				t.Fatal(err)
			}
			up := held(t, ctx, a)    // agent-a calls the server
			down := held(t, ctx, sb) // the server calls agent-b
			eventually(t, "the calls in flight", func() bool {
				as, bs := sa.Stats(), sb.Stats()
				return as.CallsIn == 1 && as.CallsOut == 0 && as.StreamsOpen == 1 &&
					bs.CallsIn == 0 && bs.CallsOut == 1 && bs.StreamsOpen == 1
			})
			idle(t, [2]*rpc.Peer{a, sa}, [2]*rpc.Peer{b, sb})
			if got := sa.Stats().BytesReceived; got < uint64(len(payload)) {
				t.Errorf("agent-a's peer received %d bytes, less than the %d-byte request", got, len(payload))
			}
			for _, p := range []*rpc.Peer{sa, sb} {
				if st := p.Stats().Started; st.Before(begin) || st.After(time.Now()) {
					t.Errorf("started %v, outside the test", st)
				}
			}
			// smux may still send a window update or two once the
			// counters first match: compare again until a scrape and the
			// Stats read just before it agree.
			var err error
			for range 50 {
				if err = testutil.CollectAndCompare(c, strings.NewReader(expected(sa, sb)), metricNames...); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Error(err)
			}
			if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %+v", err, problems)
			}

			released(t, up)
			released(t, down)
			a.Close()
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			eventually(t, "agent-a's series to vanish", func() bool {
				n, err := testutil.GatherAndCount(reg, "muxrpc_peer_streams_open")
				return err == nil && n == 1
			})
			if n, err := testutil.GatherAndCount(reg); err != nil || n != 1+6 { // muxrpc_peers, and agent-b's six: no rtt yet
				t.Errorf("gathered %d series, %v; want 7", n, err)
			}
			if ms := gather(t, reg, "muxrpc_peers"); len(ms) != 1 || ms[0].value != 1 {
				t.Errorf("muxrpc_peers: %v, want 1", ms)
			}
		})
	}
}

// series is one series of a gathered metric.
type series struct {
	labels map[string]string
	value  float64 // a gauge's or a counter's
}

// gather returns the series of name in reg.
func gather(t testing.TB, reg *prometheus.Registry, name string) []series {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []series
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			s := series{labels: map[string]string{}, value: m.GetGauge().GetValue() + m.GetCounter().GetValue()}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			out = append(out, s)
		}
	}
	return out
}

// TestCollectorRTT has keepalive ping every 50 ms: on the native
// transport the peer gets a muxrpc_peer_rtt_seconds series, positive; on
// smux, whose keepalive is never answered, it gets none.
func TestCollectorRTT(t *testing.T) {
	for _, tr := range []mux.Transport{mux.Native, mux.Smux} {
		t.Run(tr.String(), func(t *testing.T) {
			cfg := &mux.Config{Transport: tr, KeepAliveInterval: 50 * time.Millisecond, KeepAliveTimeout: 5 * time.Second}
			srv, addr := newServer(t, "tcp", cfg)
			dial(t, addr, "agent-a", cfg)
			p := peerNamed(t, srv, "agent-a")
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(peermetrics.NewCollector(srv))
			if tr == mux.Smux {
				time.Sleep(200 * time.Millisecond) // a few keepalive intervals
				if ms := gather(t, reg, "muxrpc_peer_rtt_seconds"); len(ms) != 0 {
					t.Errorf("smux: %d rtt series, want none", len(ms))
				}
				return
			}
			eventually(t, "an rtt series", func() bool {
				ms := gather(t, reg, "muxrpc_peer_rtt_seconds")
				return len(ms) == 1 && ms[0].value > 0
			})
			if p.Stats().LastRTT <= 0 {
				t.Errorf("LastRTT = %v", p.Stats().LastRTT)
			}
		})
	}
}

// TestCollectorSameLabels has two anonymous peers on a Unix socket,
// whose remote addresses are the same: the second gets "#2" after its
// address, and the registry gathers both.
func TestCollectorSameLabels(t *testing.T) {
	srv, addr := newServer(t, "unix", nil)
	dial(t, addr, "", nil)
	dial(t, addr, "", nil)
	eventually(t, "two peers", func() bool { return len(srv.Peers()) == 2 })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(peermetrics.NewCollector(srv, peermetrics.ConstLabels(prometheus.Labels{"server": "test"})))
	ms := gather(t, reg, "muxrpc_peer_bytes_sent_total")
	if len(ms) != 2 {
		t.Fatalf("%d series, want 2", len(ms))
	}
	labels := map[string]string{}
	for _, m := range ms {
		for k, v := range m.labels {
			labels[k+"/"+v] = v
		}
	}
	if _, ok := labels["server/test"]; !ok {
		t.Errorf("no const label server=test among %v", labels)
	}
	addr0 := srv.Peers()[0].RemoteAddr().String()
	if _, ok := labels["peer/"+addr0+"#2"]; !ok {
		t.Errorf("no peer label %q among %v", addr0+"#2", labels)
	}
}

// BenchmarkCollect scrapes a server of 100 peers.
func BenchmarkCollect(b *testing.B) {
	srv, addr := newServer(b, "tcp", nil)
	for i := range 100 {
		dial(b, addr, fmt.Sprintf("agent-%d", i), nil)
	}
	eventually(b, "100 peers", func() bool { return len(srv.Peers()) == 100 })
	reg := prometheus.NewRegistry()
	reg.MustRegister(peermetrics.NewCollector(srv))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
