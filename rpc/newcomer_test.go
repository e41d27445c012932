package rpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The errors a newcomer meets first, over real loopback connections.

// selfSignedServer returns a TLS configuration with a self-signed
// certificate for 127.0.0.1.
func selfSignedServer(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// serveRPC serves an echo Server on a new loopback port until the test
// ends, and returns its address.
func serveRPC(t *testing.T, opts ...rpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(opts...)
	echov1.RegisterEchoServer(srv, echoServer{name: "echo"})
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// checkNoStutter fails the test if a package's prefix appears twice in
// err's text.
func checkNoStutter(t *testing.T, err error) {
	t.Helper()
	for _, p := range []string{"mux: ", "rpc: "} {
		if strings.Count(err.Error(), p) > 1 {
			t.Errorf("%q says %q more than once", err, p)
		}
	}
}

// TestDialFailuresSayWhy: rpc.Dial fails with Unavailable, saying why and
// keeping its cause, when it cannot connect, when the server speaks
// something else, and when the handshake times out; within milliseconds
// but for the last.
func TestDialFailuresSayWhy(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()

	tln, err := tls.Listen("tcp", "127.0.0.1:0", selfSignedServer(t))
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
	t.Cleanup(func() { tln.Close(); <-tlsDone })

	hs := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(hs.Close)
	httpAddr := strings.TrimPrefix(hs.URL, "http://")

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silentDone := make(chan struct{})
	go func() {
		defer close(silentDone)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { silent.Close(); <-silentDone })

	nativeAddr := serveRPC(t)
	smuxAddr := serveRPC(t, rpc.MuxConfig(&mux.Config{Transport: mux.Smux}))

	smux := rpc.MuxConfig(&mux.Config{Transport: mux.Smux})
	for _, c := range []struct {
		name   string
		addr   string
		opts   []rpc.DialOption
		says   string
		is     error
		within time.Duration
	}{
		{"refused", refusedAddr, nil, "connection refused", syscall.ECONNREFUSED, 2 * time.Second},
		{"TLS server", tln.Addr().String(), nil, "the peer speaks TLS: dial with rpc.WithTLS", mux.ErrNotMuxrpc, 2 * time.Second},
		{"TLS server, smux", tln.Addr().String(), []rpc.DialOption{smux}, "the peer speaks TLS: dial with rpc.WithTLS", mux.ErrNotMuxrpc, 2 * time.Second},
		// With MaxConcurrentCalls 10 the settings carry a newline, the end
		// of a line an HTTP/1.x server waits for before it answers.
		{"HTTP server", httpAddr, []rpc.DialOption{rpc.MaxConcurrentCalls(10)}, "the peer speaks HTTP/1.x: an HTTP server?", mux.ErrNotMuxrpc, 2 * time.Second},
		// With the defaults nothing ends a line: the server stays silent,
		// until Dial asks it again on a second connection.
		{"HTTP server, silent", httpAddr, nil, "the peer speaks HTTP/1.x: an HTTP server? (it says nothing to a muxrpc preface until a line ends)", mux.ErrNotMuxrpc, 2 * time.Second},
		{"HTTP server, silent, smux", httpAddr, []rpc.DialOption{smux}, "the peer speaks HTTP/1.x: an HTTP server?", mux.ErrNotMuxrpc, 2 * time.Second},
		{"smux client, native server", nativeAddr, []rpc.DialOption{smux},
			"the peer speaks muxrpc's native transport, not smux; set Config.Transport = mux.Native", mux.ErrTransportMismatch, 2 * time.Second},
		{"native client, smux server", smuxAddr, nil,
			"the peer speaks smux, not the native transport; set Config.Transport = mux.Smux", mux.ErrTransportMismatch, 2 * time.Second},
		{"silent server", silent.Addr().String(), []rpc.DialOption{rpc.MuxConfig(&mux.Config{HandshakeTimeout: 300 * time.Millisecond})},
			"i/o timeout", nil, 5 * time.Second},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		p, err := rpc.Dial(ctx, c.addr, c.opts...)
		d := time.Since(start)
		cancel()
		if p != nil {
			p.Close()
			t.Errorf("%s: Dial succeeded", c.name)
			continue
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v; want Unavailable saying %q", c.name, err, c.says)
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: %v is not %v", c.name, err, c.is)
		}
		if d > c.within {
			t.Errorf("%s: Dial failed only after %v", c.name, d)
		}
		checkNoStutter(t, err)
	}

	// A context that ends first: Unavailable too, and its error.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = rpc.Dial(ctx, silent.Addr().String())
	if status.Code(err) != codes.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial until its context ended: %v; want Unavailable and context.DeadlineExceeded", err)
	}
	checkNoStutter(t, err)
}

// TestCallOnNilPeer: a client built on the nil Peer that PeerFromContext
// returns outside a handler fails its calls with FailedPrecondition.
func TestCallOnNilPeer(t *testing.T) {
	p := rpc.PeerFromContext(context.Background())
	if p != nil {
		t.Fatal("a Peer outside a handler")
	}
	echo := echov1.NewEchoClient(p)
	const want = "rpc: call on a nil *Peer: PeerFromContext returns nil outside a handler"
	_, err := echo.Unary(context.Background(), &echov1.EchoRequest{})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Errorf("Unary: %v", err)
	}
	_, err = echo.Bidi(context.Background())
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
		t.Errorf("Bidi: %v", err)
	}
}

// nilEcho answers Unary with no response and no error.
type nilEcho struct{ echov1.UnimplementedEchoServer }

func (nilEcho) Unary(context.Context, *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return nil, nil
}

// TestNilReplyAndNilResponse: a unary call with a nil reply, and a
// handler that returns neither response nor error, fail with Internal and
// say so.
func TestNilReplyAndNilResponse(t *testing.T) {
	addr := serveRPC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := rpc.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.Invoke(ctx, "/muxrpc.echo.v1.Echo/Unary", &echov1.EchoRequest{}, nil)
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "rpc: nil reply: Invoke needs a message to decode the response into" {
		t.Errorf("Invoke with a nil reply: %v", err)
	}
	// A call that fails fails with its own status, nil reply or not, as
	// gRPC's interop case unimplemented_method expects.
	if err := p.Invoke(ctx, "/muxrpc.echo.v1.Echo/Nope", nil, nil); status.Code(err) != codes.Unimplemented {
		t.Errorf("Invoke of an unknown method with nil messages: %v, want Unimplemented", err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, nilEcho{})
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()
	q, err := rpc.Dial(ctx, lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	_, err = echov1.NewEchoClient(q).Unary(ctx, &echov1.EchoRequest{})
	want := "rpc: handler for " + echov1.Echo_Unary_FullMethodName + " returned a nil response and no error"
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != want {
		t.Errorf("a handler's nil response: %v; want Internal %q", err, want)
	}
}
