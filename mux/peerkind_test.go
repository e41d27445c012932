package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkHandshakeError checks a handshake's error: it says want, is
// ErrNotMuxrpc, came well before the handshake timeout, and names each
// package's prefix once.
func checkHandshakeError(t *testing.T, who string, err error, d time.Duration, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: the handshake succeeded", who)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: %v, want it to say %q", who, err, want)
	}
	if !errors.Is(err, ErrNotMuxrpc) {
		t.Errorf("%s: %v is not ErrNotMuxrpc", who, err)
	}
	if d > 2*time.Second {
		t.Errorf("%s: failed only after %v", who, d)
	}
	if strings.Count(err.Error(), "mux: ") > 1 {
		t.Errorf("%s: %q says \"mux: \" more than once", who, err)
	}
}

// TestTransportMismatchNamed: a Native side and a Smux side fail their
// handshake, both of them, at once, saying what the peer speaks and which
// Transport to set.
func TestTransportMismatchNamed(t *testing.T) {
	for _, c := range []struct {
		server, client Transport
		serverSays     string
		clientSays     string
	}{
		{Native, Smux,
			"the peer speaks smux, not the native transport; set Config.Transport = mux.Smux on this side",
			"the peer speaks muxrpc's native transport, not smux; set Config.Transport = mux.Native on this side"},
		{Smux, Native,
			"the peer speaks muxrpc's native transport, not smux; set Config.Transport = mux.Native on this side",
			"the peer speaks smux, not the native transport; set Config.Transport = mux.Smux on this side"},
	} {
		t.Run(c.server.String()+" server", func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			type result struct {
				err error
				d   time.Duration
			}
			srv := make(chan result, 1)
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					srv <- result{err: err}
					return
				}
				start := time.Now()
				s, err := Server(conn, &Config{Transport: c.server})
				if s != nil {
					s.Kill()
				}
				srv <- result{err, time.Since(start)}
			}()
			start := time.Now()
			s, err := Dial(testCtx(t, 10*time.Second), "tcp", ln.Addr().String(), &Config{Transport: c.client})
			if s != nil {
				s.Kill()
			}
			checkHandshakeError(t, "client", err, time.Since(start), c.clientSays)
			r := await(t, srv, 10*time.Second)
			checkHandshakeError(t, "server", r.err, r.d, c.serverSays)
			for _, err := range []error{err, r.err} {
				if !errors.Is(err, ErrTransportMismatch) {
					t.Errorf("%v is not ErrTransportMismatch", err)
				}
			}
		})
	}
}

// TestNotMuxrpcServersNamed: a client of either transport dialing a TLS
// server without TLS, or an HTTP/1.x server, fails its handshake at once
// and says what the server speaks.
func TestNotMuxrpcServersNamed(t *testing.T) {
	serverTLS, _ := selfSigned(t)
	tln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	tlsDone := make(chan struct{})
	go func() {
		defer close(tlsDone)
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	defer func() { tln.Close(); <-tlsDone }()
	hs := httptest.NewServer(http.NotFoundHandler())
	defer hs.Close()
	httpAddr := strings.TrimPrefix(hs.URL, "http://")

	for _, tr := range []Transport{Native, Smux} {
		for _, c := range []struct {
			name, addr, want string
			cfg              Config
		}{
			{"TLS", tln.Addr().String(), "the peer speaks TLS: dial with rpc.WithTLS", Config{}},
			// An HTTP/1.x server answers once it has a line: the settings
			// carry a newline when MaxIncomingStreams is 10.
			{"HTTP/1.x answering", httpAddr, "the peer speaks HTTP/1.x: an HTTP server?", Config{MaxIncomingStreams: 10}},
			// With no newline in what the client sends, net/http waits for
			// one, until Dial asks it with an HTTP request.
			{"HTTP/1.x silent", httpAddr, "the peer speaks HTTP/1.x: an HTTP server? (it says nothing to a muxrpc preface until a line ends)", Config{HandshakeTimeout: time.Minute}},
		} {
			c.cfg.Transport = tr
			start := time.Now()
			s, err := Dial(testCtx(t, 10*time.Second), "tcp", c.addr, &c.cfg)
			if s != nil {
				s.Kill()
			}
			checkHandshakeError(t, tr.String()+" client of a "+c.name+" server", err, time.Since(start), c.want)
		}
	}
}

// TestSilentHTTPServersNamed: an HTTP/1.x server, which says nothing to
// a muxrpc preface, is asked with an HTTP request on a second connection
// once it has been silent for a moment, with TLS (DialTLS and an HTTPS
// server) and without; the client's handshake then fails at once, saying
// so, and a client dialing again within a minute does not ask again.
func TestSilentHTTPServersNamed(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		for _, tr := range []Transport{Native, Smux} {
			var conns atomic.Int32
			hs := httptest.NewUnstartedServer(http.NotFoundHandler())
			hs.Config.ConnState = func(_ net.Conn, cs http.ConnState) {
				if cs == http.StateNew {
					conns.Add(1)
				}
			}
			dial, want := Dial, "the peer speaks HTTP/1.x: an HTTP server?"
			if withTLS {
				hs.StartTLS()
				clientTLS := hs.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
				clientTLS.NextProtos = nil
				dial = func(ctx context.Context, network, addr string, cfg *Config) (*Session, error) {
					return DialTLS(ctx, network, addr, clientTLS, cfg)
				}
				want = "the peer speaks HTTP/1.x: an HTTPS server?"
			} else {
				hs.Start()
			}
			addr := hs.Listener.Addr().String()
			name := fmt.Sprintf("%v client of an HTTP server, TLS %v", tr, withTLS)
			for i, wantConns := range []int32{2, 3} {
				start := time.Now()
				s, err := dial(testCtx(t, 30*time.Second), "tcp", addr, &Config{Transport: tr, HandshakeTimeout: time.Minute})
				if s != nil {
					s.Kill()
				}
				checkHandshakeError(t, name, err, time.Since(start), want)
				if d := time.Since(start); d < minSilence {
					t.Errorf("%s: failed after %v, before the server was silent for %v", name, d, minSilence)
				}
				// The first dial asks on a second connection; the second
				// dial recalls the answer.
				waitFor(t, "the server to see the connections", func() bool { return conns.Load() >= wantConns })
				if got := conns.Load(); got != wantConns {
					t.Errorf("%s, dial %d: the server saw %d connections, want %d", name, i+1, got, wantConns)
				}
			}
			hs.Close()
		}
	}
}

// TestSlowServerNotTakenForHTTP: a muxrpc server whose preface comes late
// is asked whether it speaks HTTP, answers the probe with its preface,
// and the client's handshake completes. (A port shared with gRPC, which
// answers HTTP/1.x requests with HTTP, answers the probe with muxrpc's
// preface too: TestBadInputOnSharedPort in rpc/grpcport.)
func TestSlowServerNotTakenForHTTP(t *testing.T) {
	for _, tr := range []Transport{Native, Smux} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			s   *Session
			err error
		}
		results := make(chan result, 2)
		accepted := make(chan struct{})
		go func() {
			defer close(accepted)
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					time.Sleep(2 * minSilence) // the server is slow
					s, err := Server(conn, &Config{Transport: tr})
					results <- result{s, err}
				}()
			}
		}()
		s, err := Dial(testCtx(t, 30*time.Second), "tcp", ln.Addr().String(), &Config{Transport: tr})
		if err != nil {
			t.Fatalf("%v: dialing a slow muxrpc server: %v", tr, err)
		}
		var probes, sessions int
		for range 2 {
			r := await(t, results, 10*time.Second)
			if r.err == nil {
				sessions++
				r.s.Close()
			} else {
				probes++
			}
		}
		s.Close()
		ln.Close()
		<-accepted
		if probes != 1 || sessions != 1 {
			t.Errorf("%v: the server saw %d sessions and %d failed handshakes, want one of each", tr, sessions, probes)
		}
	}
}

// TestSilentServerAskedOnce: a server that accepts connections and never
// says a word, to the preface or to the probe, is asked once: a client
// that dials it again within a minute remembers that it did not answer as
// HTTP, and its handshake ends at the handshake timeout, as the first's.
func TestSilentServerAskedOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	}()
	// Long enough for the probe to give up (probeTimeout) first.
	cfg := &Config{HandshakeTimeout: minSilence + probeTimeout + time.Second}
	for i, want := range []int{2, 3} {
		s, err := Dial(testCtx(t, 30*time.Second), "tcp", ln.Addr().String(), cfg)
		if s != nil {
			s.Kill()
		}
		if !isTimeout(err) || errors.Is(err, ErrNotMuxrpc) {
			t.Errorf("dial %d: %v, want the handshake's timeout", i+1, err)
		}
		mu.Lock()
		got := len(conns)
		mu.Unlock()
		if got != want {
			t.Errorf("dial %d: the server saw %d connections, want %d", i+1, got, want)
		}
	}
}

// TestPeerSpeaks: what the handshake says of a peer's first bytes.
func TestPeerSpeaks(t *testing.T) {
	for _, c := range []struct {
		got    string
		tr     Transport
		client bool
		want   string
	}{
		{"\x02\x00\x00\x00\x03\x00\x00\x00", Native, false, "the peer speaks smux"},
		{"MUXRPC\x00\x01", Smux, true, "the peer speaks muxrpc's native transport"},
		{"\x15\x03\x01\x00\x02\x02\x46", Native, true, "the peer speaks TLS: dial with rpc.WithTLS"},
		{"\x16\x03\x01\x01\x00\x01\x00\x00", Native, false, "the peer speaks TLS: a client dialing with TLS"},
		{"HTTP/1.1", Smux, true, "the peer speaks HTTP/1.x: an HTTP server?"},
		{"GET / HT", Native, false, "the peer speaks HTTP/1.x: an HTTP client?"},
		{"\x00\x00\x06\x04\x00\x00\x00\x00", Native, true, "the peer speaks HTTP/2: a gRPC server?"},
		{"\x00\x00\x08\x07\x00\x00\x00\x00", Smux, true, "the peer speaks HTTP/2: a gRPC server?"},
		{"PRI * HT", Native, false, "the peer speaks HTTP/2: a gRPC client?"},
		{"muxrpc\x00\x01", Native, true, "mux: handshake: peer is not a muxrpc peer: got"},
	} {
		err := peerSpeaks([]byte(c.got), c.tr, c.client)
		if !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrNotMuxrpc) {
			t.Errorf("%q: %v, want ErrNotMuxrpc saying %q", c.got, err, c.want)
		}
		if strings.Count(err.Error(), "mux: ") != 1 {
			t.Errorf("%q: %q", c.got, err)
		}
	}
}

// await returns the next value from ch, failing the test if none comes
// within d.
func await[T any](t *testing.T, ch <-chan T, d time.Duration) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("nothing within %v", d)
	}
	panic("unreachable")
}
