package rpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Certificates for the TLS tests, made afresh by each test: a CA, the
// certificates it issues, and a second CA that nobody trusts.

// testCA is a certificate authority of one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool // trusts this CA only
}

var serialNumber atomic.Int64

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newTestCA makes a self-signed CA named name.
func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serialNumber.Add(1)),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"muxrpc tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leafSpec says what a certificate the CA issues is for.
type leafSpec struct {
	name      string   // the subject's common name
	ips       []net.IP // subject alternative names
	dns       []string
	client    bool          // for client authentication, not server
	expiredAt time.Duration // > 0: the certificate expired this long ago
}

// issue makes a certificate as spec says, signed by ca.
func (ca *testCA) issue(t testing.TB, spec leafSpec) tls.Certificate {
	t.Helper()
	key := newKey(t)
	notBefore, notAfter := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if spec.expiredAt > 0 {
		notBefore, notAfter = time.Now().Add(-spec.expiredAt-time.Hour), time.Now().Add(-spec.expiredAt)
	}
	usage := x509.ExtKeyUsageServerAuth
	if spec.client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serialNumber.Add(1)),
		Subject:      pkix.Name{CommonName: spec.name, Organization: []string{"muxrpc tests"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  spec.ips,
		DNSNames:     spec.dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// testPKI is the certificates a TLS test uses.
type testPKI struct {
	ca, otherCA *testCA
	server      tls.Certificate // for 127.0.0.1, by ca
	client      tls.Certificate // "alice", by ca
}

// Names in the test certificates.
const (
	serverName = "muxrpc test server"
	clientName = "alice"
)

func newTestPKI(t testing.TB) *testPKI {
	ca := newTestCA(t, "muxrpc test CA")
	return &testPKI{
		ca:      ca,
		otherCA: newTestCA(t, "untrusted CA"),
		server:  ca.issue(t, leafSpec{name: serverName, ips: []net.IP{net.IPv4(127, 0, 0, 1)}}),
		client:  ca.issue(t, leafSpec{name: clientName, client: true}),
	}
}

// mutualServerTLS is a server's config that requires a client certificate
// the test CA issued.
func (pki *testPKI) mutualServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientCAs:    pki.ca.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// clientTLS is a client's config that trusts the test CA and presents
// certs.
func (pki *testPKI) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: pki.ca.pool, Certificates: certs}
}

// forcedClientTLS is a client's config that trusts the test CA and
// presents cert whatever CAs the server asks for, as an attacker would (a
// Go client otherwise sends no certificate the server's CAs did not
// issue).
func (pki *testPKI) forcedClientTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: pki.ca.pool, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}}
}

// verifiedIdentity returns the common name of the certificate the caller
// of a handler presented, after checking that peer.FromContext gives a
// credentials.TLSInfo of a finished handshake whose leaf the CA verified.
func verifiedIdentity(ctx context.Context, ca *testCA) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("no peer in the context")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("AuthInfo is %T, want credentials.TLSInfo", p.AuthInfo)
	}
	st := info.State
	switch {
	case info.AuthType() != "tls" || info.SecurityLevel != credentials.PrivacyAndIntegrity:
		return "", fmt.Errorf("auth type %q, security level %v", info.AuthType(), info.SecurityLevel)
	case !st.HandshakeComplete || st.Version < tls.VersionTLS12:
		return "", fmt.Errorf("handshake complete %v, version %x", st.HandshakeComplete, st.Version)
	case len(st.PeerCertificates) == 0:
		return "", errors.New("no peer certificates")
	case len(st.VerifiedChains) == 0:
		return "", errors.New("no verified chains")
	}
	chain := st.VerifiedChains[0]
	if !chain[0].Equal(st.PeerCertificates[0]) || !chain[len(chain)-1].Equal(ca.cert) {
		return "", fmt.Errorf("verified chain %v does not lead from the peer's leaf to the test CA", chain)
	}
	return st.PeerCertificates[0].Subject.CommonName, nil
}

// identityLog records, per place in the code, the identity a call's
// context showed there.
type identityLog struct {
	ca   *testCA
	mu   sync.Mutex
	seen map[string][]string // place -> common names, or "error: ..."
}

func (l *identityLog) record(place string, ctx context.Context) {
	name, err := verifiedIdentity(ctx, l.ca)
	if err != nil {
		name = "error: " + err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string][]string{}
	}
	l.seen[place] = append(l.seen[place], name)
}

func (l *identityLog) get(place string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[place]
}

// interceptors returns server interceptors that record what they see as
// side+" unary interceptor" and side+" stream interceptor".
func (l *identityLog) interceptors(side string) []ServerOption {
	return []ServerOption{
		ChainUnaryServer(func(ctx context.Context, req any, info *UnaryServerInfo, h UnaryHandler) (any, error) {
			l.record(side+" unary interceptor", ctx)
			return h(ctx, req)
		}),
		ChainStreamServer(func(srv any, ss ServerStream, info *StreamServerInfo, h StreamHandler) error {
			l.record(side+" stream interceptor", ss.Context())
			return h(srv, ss)
		}),
	}
}

// TestMutualTLSIdentityOnBothSides runs calls both ways over a mutually
// authenticated session, unary and bidi-streaming: the server's
// interceptors and handlers see, through peer.FromContext, a
// credentials.TLSInfo whose leaf is the client's certificate ("alice"),
// verified up to the test CA; and the callbacks the server's handlers make
// into the client, through PeerFromContext, reach the client's
// interceptors and handlers with the server's verified certificate.
func TestMutualTLSIdentityOnBothSides(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		pki := newTestPKI(t)
		log := &identityLog{ca: pki.ca}

		// The server's handlers record what they see and call the caller
		// back the same way.
		srv := NewServer(append(log.interceptors("server"), muxOpt(tr))...)
		srv.RegisterService(&echoDesc, &funcEcho{
			unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				log.record("server unary handler", ctx)
				return echoClient{PeerFromContext(ctx)}.Unary(ctx, in)
			},
			bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
				log.record("server stream handler", s.Context())
				in, err := s.Recv()
				if err != nil {
					return err
				}
				back, err := echoClient{PeerFromContext(s.Context())}.Bidi(s.Context())
				if err != nil {
					return err
				}
				if err := back.Send(in); err != nil {
					return err
				}
				out, err := back.Recv()
				if err != nil {
					return err
				}
				back.CloseSend()
				return s.Send(out)
			},
		})
		callbacks := NewServer(log.interceptors("client")...)
		callbacks.RegisterService(&echoDesc, &funcEcho{
			unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				log.record("client unary handler", ctx)
				return wrapperspb.String("client:" + in.Value), nil
			},
			bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
				log.record("client stream handler", s.Context())
				return defaultEcho.Bidi(s)
			},
		})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, srv, tls.NewListener(ln, pki.mutualServerTLS()))
		client := dial(t, ln.Addr().String(), WithTLS(pki.clientTLS(pki.client)), WithServices(callbacks), muxOpt(tr))

		out, err := echoClient{client}.Unary(ctx, wrapperspb.String("u"))
		if err != nil || out.Value != "client:u" {
			t.Fatalf("unary call through a callback: got %v, %v; want client:u", out, err)
		}
		s, err := echoClient{client}.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(wrapperspb.String("b")); err != nil {
			t.Fatal(err)
		}
		if m, err := s.Recv(); err != nil || m.Value != "server:b" {
			t.Fatalf("bidi call through a callback: got %v, %v; want server:b", m, err)
		}
		s.CloseSend()
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("got %v, want io.EOF", err)
		}

		for _, side := range []struct{ side, want string }{{"server", clientName}, {"client", serverName}} {
			for _, where := range []string{"unary interceptor", "unary handler", "stream interceptor", "stream handler"} {
				place := side.side + " " + where
				if got := log.get(place); len(got) != 1 || got[0] != side.want {
					t.Errorf("%s saw %q, want the verified identity %q once", place, got, side.want)
				}
			}
		}
		// The dialer's own view of the session: the server's verified leaf.
		cs := client.Session().Conn().(*tls.Conn).ConnectionState()
		if len(cs.VerifiedChains) == 0 || !cs.PeerCertificates[0].Equal(pki.server.Leaf) {
			t.Errorf("the client's connection state does not hold the server's verified certificate")
		}
	})
}

// closeTracker is a net.Listener that reports each connection it accepted
// once the connection is closed (by the TLS or mux layers above it).
type closeTracker struct {
	net.Listener
	accepted atomic.Int32
	closed   chan string // the remote address of each closed connection
}

func trackCloses(t testing.TB) *closeTracker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &closeTracker{Listener: ln, closed: make(chan string, 64)}
}

func (l *closeTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return &trackedConn{Conn: c, closed: l.closed}, nil
}

type trackedConn struct {
	net.Conn
	once   sync.Once
	closed chan<- string
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.closed <- c.RemoteAddr().String() })
	return err
}

// refusalServer is a mutual-TLS server on a tracked listener whose OnPeer
// records every peer it is given.
type refusalServer struct {
	srv    *Server
	ln     *closeTracker
	onPeer chan *Peer
}

func newRefusalServer(t *testing.T, tr mux.Transport, cfg *tls.Config) *refusalServer {
	rs := &refusalServer{ln: trackCloses(t), onPeer: make(chan *Peer, 16)}
	rs.srv = NewServer(muxOpt(tr), OnPeer(func(p *Peer) { rs.onPeer <- p }))
	rs.srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	serveOn(t, rs.srv, tls.NewListener(rs.ln, cfg))
	return rs
}

// expectRefused checks that the connection dialErr came from was closed
// by the server without a Peer, and that the server goes on to serve a
// good client: OnPeer then runs once, for it.
func (rs *refusalServer) expectRefused(t *testing.T, pki *testPKI, tr mux.Transport) {
	t.Helper()
	await(t, rs.ln.closed, 5*time.Second, "the server to close the refused connection")
	if n := rs.ln.accepted.Load(); n != 1 {
		t.Fatalf("the server accepted %d connections, want 1", n)
	}
	select {
	case p := <-rs.onPeer:
		t.Fatalf("OnPeer ran for the refused connection from %v", p.RemoteAddr())
	default:
	}
	if peers := rs.srv.Peers(); len(peers) != 0 {
		t.Fatalf("the server has %d peers after the refusal, want 0", len(peers))
	}
	ctx := testCtx(t, 10*time.Second)
	good := dial(t, rs.ln.Addr().String(), WithTLS(pki.clientTLS(pki.client)), muxOpt(tr))
	checkEcho(t, ctx, good, "server")
	p := await(t, rs.onPeer, 5*time.Second, "OnPeer for the good client")
	if p.RemoteAddr().String() != good.Session().LocalAddr().String() {
		t.Fatalf("OnPeer ran for %v, want the good client %v", p.RemoteAddr(), good.Session().LocalAddr())
	}
}

// TestMutualTLSRefusesClientWithoutValidCertificate dials a server that
// requires client certificates with no certificate, with one an untrusted
// CA signed, with an expired one, and with one not for client
// authentication (the server's own): each dial fails with an error that
// names the TLS alert the server sent, the server closes the connection
// without making a Peer (no OnPeer, no entry in Peers), and serves the
// next, good client.
func TestMutualTLSRefusesClientWithoutValidCertificate(t *testing.T) {
	pki := newTestPKI(t)
	cases := []struct {
		name string
		cfg  *tls.Config
		want string // in the dial's error
	}{
		{"no certificate", pki.clientTLS(), "certificate required"},
		{"signed by another CA", pki.forcedClientTLS(pki.otherCA.issue(t, leafSpec{name: "mallory", client: true})), "unknown certificate authority"},
		{"expired", pki.forcedClientTLS(pki.ca.issue(t, leafSpec{name: "bob", client: true, expiredAt: time.Hour})), "expired certificate"},
		{"server certificate as client certificate", pki.forcedClientTLS(pki.server), "bad certificate"},
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				rs := newRefusalServer(t, tr, pki.mutualServerTLS())
				ctx := testCtx(t, 10*time.Second)
				p, err := Dial(ctx, rs.ln.Addr().String(), WithTLS(tc.cfg), muxOpt(tr))
				if err == nil {
					p.Close()
					t.Fatal("the dial succeeded")
				}
				var opErr *net.OpError
				if !strings.Contains(err.Error(), "tls: "+tc.want) || !errors.As(err, &opErr) || opErr.Op != "remote error" {
					t.Fatalf("the dial failed with %q, want a remote TLS alert %q", err, tc.want)
				}
				t.Logf("the dial failed with: %v", err)
				rs.expectRefused(t, pki, tr)
			})
		}
	})
}

// TestTLSRejectsBadServerCertificate dials servers whose certificate has
// expired, names another host, or comes from an untrusted CA: each dial
// fails with the x509 error, reachable through errors.As, that names the
// cause, and the server makes no Peer and serves the next, good client.
func TestTLSRejectsBadServerCertificate(t *testing.T) {
	pki := newTestPKI(t)
	localhost := []net.IP{net.IPv4(127, 0, 0, 1)}
	cases := []struct {
		name  string
		cert  tls.Certificate
		check func(err error) bool
	}{
		{"expired", pki.ca.issue(t, leafSpec{name: serverName, ips: localhost, expiredAt: time.Hour}), func(err error) bool {
			var e x509.CertificateInvalidError
			return errors.As(err, &e) && e.Reason == x509.Expired
		}},
		{"wrong name", pki.ca.issue(t, leafSpec{name: serverName, dns: []string{"elsewhere.example"}}), func(err error) bool {
			var e x509.HostnameError
			return errors.As(err, &e) && e.Host == "127.0.0.1"
		}},
		{"untrusted CA", pki.otherCA.issue(t, leafSpec{name: serverName, ips: localhost}), func(err error) bool {
			var e x509.UnknownAuthorityError
			return errors.As(err, &e)
		}},
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				// The server presents the bad certificate to the first
				// client and its good one to the next.
				var served atomic.Int32
				cfg := pki.mutualServerTLS()
				cfg.Certificates = nil
				cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
					if served.Add(1) == 1 {
						return &tc.cert, nil
					}
					return &pki.server, nil
				}
				rs := newRefusalServer(t, tr, cfg)
				ctx := testCtx(t, 10*time.Second)
				p, err := Dial(ctx, rs.ln.Addr().String(), WithTLS(pki.clientTLS(pki.client)), muxOpt(tr))
				if err == nil {
					p.Close()
					t.Fatal("the dial succeeded")
				}
				if !tc.check(err) {
					t.Fatalf("the dial failed with %q (%T), not the x509 error for %s", err, errors.Unwrap(err), tc.name)
				}
				t.Logf("the dial failed with: %v", err)
				rs.expectRefused(t, pki, tr)
			})
		}
	})
}

// TestTLSHandshakeBoundedByHandshakeTimeout connects to a TLS server and
// never completes the TLS handshake: silent, or stalled inside its
// ClientHello. The server closes each connection once its
// HandshakeTimeout has passed (not before, not much later), so that no
// server goroutine waits on it longer, and serves a good client meanwhile.
func TestTLSHandshakeBoundedByHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		pki := newTestPKI(t)
		srv := NewServer(MuxConfig(&mux.Config{Transport: tr, HandshakeTimeout: timeout}))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, srv, tls.NewListener(ln, pki.mutualServerTLS()))
		for _, stall := range []struct {
			name string
			sent []byte
		}{
			{"silent", nil},
			// A handshake record header announcing 512 bytes, and the
			// ClientHello's first bytes.
			{"inside the ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}},
		} {
			t.Run(stall.name, func(t *testing.T) {
				conn, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				start := time.Now()
				if _, err := conn.Write(stall.sent); err != nil {
					t.Fatal(err)
				}
				// Meanwhile a good client gets its session at once.
				ctx := testCtx(t, 10*time.Second)
				good := dial(t, ln.Addr().String(), WithTLS(pki.clientTLS(pki.client)), MuxConfig(&mux.Config{Transport: tr}))
				checkEcho(t, ctx, good, "server")

				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := io.Copy(io.Discard, conn)
				elapsed := time.Since(start)
				if isTimeout(err) {
					t.Fatalf("the server still held the connection after %v", elapsed)
				}
				t.Logf("the server closed the stalled connection after %v (%d bytes, %v)", elapsed.Round(time.Millisecond), n, err)
				if elapsed < timeout*9/10 || elapsed > timeout+2*time.Second {
					t.Fatalf("the server closed the connection after %v, want about %v", elapsed, timeout)
				}
				good.Close()
			})
		}
	})
}

// isTimeout reports whether err is a timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestTLSDialBoundedByHandshakeTimeout dials, with a context that never
// ends, a server that accepts TCP connections and never answers: the dial
// fails with a timeout once the dialer's HandshakeTimeout has passed, as
// it does without TLS, instead of waiting for the TLS handshake forever,
// and over TLS its error says that the TLS handshake timed out.
func TestTLSDialBoundedByHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		pki := newTestPKI(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		held := make(chan net.Conn, 4)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					close(held)
					return
				}
				held <- c // never read, never written
			}
		}()
		defer func() {
			ln.Close()
			for c := range held {
				c.Close()
			}
		}()
		for _, useTLS := range []bool{false, true} {
			opts := []DialOption{MuxConfig(&mux.Config{Transport: tr, HandshakeTimeout: timeout})}
			if useTLS {
				opts = append(opts, WithTLS(pki.clientTLS(pki.client)))
			}
			start := time.Now()
			errc := async(func() error {
				p, err := Dial(context.Background(), ln.Addr().String(), opts...)
				if err == nil {
					p.Close()
				}
				return err
			})
			var err error
			select {
			case err = <-errc:
			case <-time.After(timeout + 3*time.Second):
				// Free the dial, so that it does not leak.
				for len(held) > 0 {
					(<-held).Close()
				}
				<-errc
				t.Fatalf("TLS %v: the dial still waited after %v", useTLS, time.Since(start))
			}
			elapsed := time.Since(start)
			t.Logf("TLS %v: the dial failed after %v: %v", useTLS, elapsed.Round(time.Millisecond), err)
			if !isTimeout(err) || elapsed < timeout*9/10 {
				t.Fatalf("TLS %v: the dial failed after %v with %v, want a timeout after %v", useTLS, elapsed, err, timeout)
			}
			if useTLS && !strings.Contains(err.Error(), "TLS handshake") {
				t.Fatalf("the dial's error %q does not say that the TLS handshake timed out", err)
			}
		}
	})
}

// TestServerTLSIdentity serves TLS without client certificates, calls
// both ways and checks each handler's peer.FromContext: the server's sees
// a credentials.TLSInfo of a finished handshake with no peer certificate,
// and the client's callback handler sees the server's certificate,
// verified up to the test CA.
func TestServerTLSIdentity(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		pki := newTestPKI(t)
		type seen struct {
			info credentials.TLSInfo
			ok   bool
		}
		seenc := make(chan seen, 2)
		client := &identityLog{ca: pki.ca}
		impl := &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			p, _ := peer.FromContext(ctx)
			info, ok := p.AuthInfo.(credentials.TLSInfo)
			seenc <- seen{info, ok}
			return defaultEcho.Unary(ctx, in)
		}}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			client.record("client handler", ctx)
			return wrapperspb.String("client:" + in.Value), nil
		}})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, srv, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pki.server}}))
		p := dial(t, ln.Addr().String(), WithTLS(pki.clientTLS()), WithServices(callbacks), muxOpt(tr))

		checkEcho(t, ctx, p, "server")
		s := await(t, seenc, 5*time.Second, "the server handler's AuthInfo")
		if !s.ok || !s.info.State.HandshakeComplete || s.info.SecurityLevel != credentials.PrivacyAndIntegrity {
			t.Fatalf("the server's handler saw AuthInfo %+v (TLSInfo: %v)", s.info, s.ok)
		}
		if n := len(s.info.State.PeerCertificates); n != 0 {
			t.Fatalf("the server's handler saw %d client certificates, want none", n)
		}
		checkEcho(t, ctx, onlyPeer(t, srv), "client")
		if got := client.get("client handler"); len(got) != 1 || got[0] != serverName {
			t.Fatalf("the client's handler saw %q, want the server's verified identity %q", got, serverName)
		}
	})
}
