package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// peerStatsPair serves test.Echo on a Server whose Authenticator names every
// peer "agent-1", dials it with test.Echo as callbacks, and returns the
// client's Peer and the server's, and when the test began.
func peerStatsPair(t *testing.T, tr mux.Transport, opts ...Option) (client, server *Peer, start time.Time) {
	t.Helper()
	start = time.Now()
	sopts := []ServerOption{muxOpt(tr), WithAuthenticator(func(context.Context, *SessionHello) (Identity, error) {
		return Identity{Name: "agent-1"}, nil
	})}
	dopts := []DialOption{muxOpt(tr)}
	for _, o := range opts {
		sopts, dopts = append(sopts, o), append(dopts, o)
	}
	srv := NewServer(sopts...)
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
	addr := serve(t, srv)
	client = dial(t, addr, append(dopts, WithServices(callbacks))...)
	return client, onlyPeer(t, srv), start
}

// idleAndMatched waits until the two sides' byte counters agree: what
// one side sent, the other received.
func idleAndMatched(t *testing.T, a, b *Peer) {
	t.Helper()
	eventually(t, 5*time.Second, "the two sides' byte counters to match", func() bool {
		as, bs := a.Stats(), b.Stats()
		return as.BytesSent == bs.BytesReceived && bs.BytesSent == as.BytesReceived
	})
}

// TestPeerStats checks each field of both sides' Stats over loopback:
// addresses, identity, transport, start, bytes that grow by at least the
// payloads of a call and match between the sides, and the streams and
// calls in flight while a streaming call is held open in each direction.
func TestPeerStats(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		cp, sp, start := peerStatsPair(t, tr)
		made := time.Now()
		cs, ss := cp.Stats(), sp.Stats()
		for _, st := range []PeerStats{cs, ss} {
			if st.Transport != tr {
				t.Errorf("Transport = %v, want %v", st.Transport, tr)
			}
			if st.Started.Before(start) || st.Started.After(made) {
				t.Errorf("Started = %v, not within [%v, %v]", st.Started, start, made)
			}
			if st.TLS != nil {
				t.Errorf("TLS = %+v without TLS", st.TLS)
			}
		}
		if ss.Identity.Name != "agent-1" || cs.Identity.Name != "" {
			t.Errorf("Identity: server side %q, client side %q; want agent-1 and none", ss.Identity.Name, cs.Identity.Name)
		}
		if cs.RemoteAddr.String() != cp.Session().RemoteAddr().String() ||
			ss.RemoteAddr.String() != cp.Session().LocalAddr().String() {
			t.Errorf("RemoteAddr: client side %v, server side %v; the client is %v, the server %v",
				cs.RemoteAddr, ss.RemoteAddr, cp.Session().LocalAddr(), cp.Session().RemoteAddr())
		}

		// Bytes: a unary call of 64 KiB each way.
		idleAndMatched(t, cp, sp)
		cs, ss = cp.Stats(), sp.Stats()
		const size = 64 << 10
		payload := strings.Repeat("x", size)
		out, err := echoClient{cp}.Unary(ctx, wrapperspb.String(payload))
		if err != nil || len(out.Value) != len("server:")+size {
			t.Fatalf("Unary: %d bytes, %v", len(out.GetValue()), err)
		}
		idleAndMatched(t, cp, sp)
		cs2, ss2 := cp.Stats(), sp.Stats()
		if d := cs2.BytesSent - cs.BytesSent; d < size {
			t.Errorf("the client sent %d bytes for a %d-byte request", d, size)
		}
		if d := ss2.BytesReceived - ss.BytesReceived; d < size {
			t.Errorf("the server received %d bytes for a %d-byte request", d, size)
		}
		if d := ss2.BytesSent - ss.BytesSent; d < size {
			t.Errorf("the server sent %d bytes for a %d-byte answer", d, size)
		}
		if d := cs2.BytesReceived - cs.BytesReceived; d < size {
			t.Errorf("the client received %d bytes for a %d-byte answer", d, size)
		}
		if d := cs2.BytesSent - cs.BytesSent; d > size+size/20+512 {
			t.Errorf("the client sent %d bytes for a %d-byte request: more than framing explains", d, size)
		}

		// Calls in flight: a bidi stream from the client, held open.
		counts := func(what string, wantOut, wantIn, wantStreams int) {
			t.Helper()
			eventually(t, 5*time.Second, what, func() bool {
				cs, ss := cp.Stats(), sp.Stats()
				return cs.CallsOut == wantOut && ss.CallsIn == wantOut &&
					ss.CallsOut == wantIn && cs.CallsIn == wantIn &&
					cs.StreamsOpen == wantStreams && ss.StreamsOpen == wantStreams
			})
		}
		counts("no call in flight", 0, 0, 0)
		up, err := echoClient{cp}.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hold(t, up, "up")
		counts("the client's call in flight", 1, 0, 1)
		// And one the server makes to the client's callbacks.
		down, err := echoClient{sp}.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hold(t, down, "down")
		counts("a call in flight each way", 1, 1, 2)
		release(t, up)
		counts("the server's call in flight", 0, 1, 1)
		release(t, down)
		counts("no call in flight at the end", 0, 0, 0)
	})
}

// hold sends one message on a bidi stream and reads its echo: the call is
// in flight, and its handler runs.
func hold(t *testing.T, s BidiStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue], v string) {
	t.Helper()
	if err := s.Send(wrapperspb.String(v)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
}

// release ends a bidi stream that hold held.
func release(t *testing.T, s BidiStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue]) {
	t.Helper()
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("the stream ended with %v, want io.EOF", err)
	}
}

// TestPeerStatsTLS checks that both sides' Stats carry the TLS state,
// with the server's certificate on the client's side, and that the bytes
// counted through TLS match between the sides.
func TestPeerStatsTLS(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		pki := newTestPKI(t)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, srv, tls.NewListener(ln, pki.mutualServerTLS()))
		cp := dial(t, ln.Addr().String(), WithTLS(pki.clientTLS(pki.client)), muxOpt(tr))
		sp := onlyPeer(t, srv)
		checkEcho(t, ctx, cp, "server")
		cs, ss := cp.Stats(), sp.Stats()
		if cs.TLS == nil || ss.TLS == nil {
			t.Fatalf("TLS state: client side %v, server side %v; want both", cs.TLS, ss.TLS)
		}
		if !cs.TLS.HandshakeComplete || cs.TLS.Version < tls.VersionTLS12 {
			t.Errorf("client side: handshake complete %v, version %x", cs.TLS.HandshakeComplete, cs.TLS.Version)
		}
		if certs := cs.TLS.PeerCertificates; len(certs) == 0 || certs[0].Subject.CommonName != serverName {
			t.Errorf("the client side sees %d certificates, want the server's %q first", len(certs), serverName)
		}
		if certs := ss.TLS.PeerCertificates; len(certs) == 0 || certs[0].Subject.CommonName != clientName {
			t.Errorf("the server side sees %d certificates, want the client's %q first", len(certs), clientName)
		}
		// Each Stats has its own copy of the state.
		cs.TLS.ServerName = "changed"
		if cp.Stats().TLS.ServerName == "changed" {
			t.Error("a change to one Stats' TLS state shows in the next")
		}
		idleAndMatched(t, cp, sp)
	})
}

// TestPeerStatsKeepAliveRTT has keepalive ping every 50 ms on the native
// transport: both sides' LastRTT becomes positive.
func TestPeerStatsKeepAliveRTT(t *testing.T) {
	cp, sp, _ := peerStatsPair(t, mux.Native, MuxConfig(&mux.Config{KeepAliveInterval: 50 * time.Millisecond, KeepAliveTimeout: 5 * time.Second}))
	eventually(t, 5*time.Second, "a keepalive ping answered on both sides", func() bool {
		return cp.Stats().LastRTT > 0 && sp.Stats().LastRTT > 0
	})
}

// TestStatsPullsInNoPrometheus keeps Prometheus out of the programs that
// use rpc: its collector is package rpc/peermetrics's.
func TestStatsPullsInNoPrometheus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", "github.com/muxrpc/muxrpc/rpc").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/muxrpc/muxrpc/mux") {
		t.Fatalf("go list -deps listed %d packages, not rpc's", len(deps))
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/prometheus/") {
			t.Errorf("rpc imports %s", d)
		}
	}
}
