package grpcstub_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var transports = []mux.Transport{mux.Native, mux.Smux}

func forEachTransport(t *testing.T, f func(t *testing.T, tr mux.Transport)) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) { f(t, tr) })
	}
}

func muxOpt(tr mux.Transport) rpc.Option { return rpc.MuxConfig(&mux.Config{Transport: tr}) }

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveOn serves srv on ln until the test ends.
func serveOn(t testing.TB, srv *rpc.Server, ln net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

func dial(t testing.TB, addr string, opts ...rpc.DialOption) *rpc.Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := rpc.Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// newServer returns a Server with the test's TestService registered
// through grpcstub.Registrar and its Echo service registered as
// muxrpc-generated code does.
func newServer(opts ...rpc.ServerOption) *rpc.Server {
	srv := rpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(grpcstub.Registrar(srv), &testServer{})
	echov1.RegisterEchoServer(srv, &echoServer{})
	return srv
}

// setup serves newServer on a loopback listener and dials it, on tr.
type setup struct {
	addr string
	srv  *rpc.Server
	peer *rpc.Peer
}

func start(t testing.TB, tr mux.Transport, srvOpts ...rpc.ServerOption) setup {
	t.Helper()
	srv := newServer(append([]rpc.ServerOption{muxOpt(tr)}, srvOpts...)...)
	ln := listen(t)
	serveOn(t, srv, ln)
	addr := ln.Addr().String()
	return setup{addr: addr, srv: srv, peer: dial(t, addr, muxOpt(tr))}
}

// startTLS is start over TLS, with a self-signed certificate for
// 127.0.0.1 that the client trusts.
func startTLS(t testing.TB, tr mux.Transport) setup {
	t.Helper()
	cert, pool := selfSigned(t)
	srv := newServer(muxOpt(tr))
	ln := listen(t)
	serveOn(t, srv, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}}))
	addr := ln.Addr().String()
	return setup{addr: addr, srv: srv, peer: dial(t, addr, muxOpt(tr), rpc.WithTLS(&tls.Config{RootCAs: pool}))}
}

func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "grpcstub test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func wantCode(t testing.TB, err error, code codes.Code, substr string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || !strings.Contains(st.Message(), substr) {
		t.Fatalf("error %v, want code %v with %q", err, code, substr)
	}
}

// wantMD checks that md[key] is exactly want.
func wantMD(t testing.TB, what string, md metadata.MD, key string, want ...string) {
	t.Helper()
	got := md.Get(key)
	if strings.Join(got, ",") != strings.Join(want, ",") || len(got) != len(want) {
		t.Errorf("%s[%q] = %q, want %q (all: %v)", what, key, got, want, md)
	}
}

func failWith(code codes.Code, msg string) *testgrpc.EchoStatus {
	return &testgrpc.EchoStatus{Code: int32(code), Message: msg}
}

func payload(n int) *testgrpc.Payload {
	return &testgrpc.Payload{Body: make([]byte, n)}
}

// testServer is TestService, grpc-generated: it answers with the payload
// sizes asked, sets header metadata ("h") and trailer metadata ("t")
// through grpc's functions, and fails with the status asked. UnaryCall
// reports the caller's "authorization" metadata as Username and
// grpc.Method as OauthScope.
type testServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testServer) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := grpc.SetHeader(ctx, metadata.Pairs("h", "unary")); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs("t", "unary")); err != nil {
		return nil, err
	}
	if s := in.ResponseStatus; s != nil {
		return nil, status.Error(codes.Code(s.Code), s.Message)
	}
	method, _ := grpc.Method(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	out := &testgrpc.SimpleResponse{Username: strings.Join(md.Get("authorization"), ";"), OauthScope: method}
	if in.ResponseSize > 0 {
		out.Payload = payload(int(in.ResponseSize))
	} else {
		out.Payload = in.Payload
	}
	return out, nil
}

func (testServer) StreamingOutputCall(in *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	ctx := s.Context()
	if err := grpc.SetHeader(ctx, metadata.Pairs("h", "server-stream")); err != nil {
		return err
	}
	if m, ok := grpc.Method(ctx); !ok || m != testgrpc.TestService_StreamingOutputCall_FullMethodName {
		return status.Errorf(codes.Internal, "grpc.Method = %q, %v", m, ok)
	}
	grpc.SetTrailer(ctx, metadata.Pairs("t", "server-stream"))
	for _, p := range in.ResponseParameters {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: payload(int(p.Size))}); err != nil {
			return err
		}
	}
	if st := in.ResponseStatus; st != nil {
		return status.Error(codes.Code(st.Code), st.Message)
	}
	return nil
}

func (testServer) FullDuplexCall(s grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	ctx := s.Context()
	if err := grpc.SendHeader(ctx, metadata.Pairs("h", "bidi")); err != nil {
		return err
	}
	grpc.SetTrailer(ctx, metadata.Pairs("t", "bidi"))
	for {
		in, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if st := in.ResponseStatus; st != nil {
			return status.Error(codes.Code(st.Code), st.Message)
		}
		for _, p := range in.ResponseParameters {
			if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: payload(int(p.Size))}); err != nil {
				return err
			}
		}
	}
}

// echoServer is the Echo service, muxrpc-generated. Unary answers the
// message, or the caller's "authorization" metadata for "auth", or fails
// with NotFound for "fail"; its streams likewise. Each sets header "h"
// and trailer "t".
type echoServer struct {
	echov1.UnimplementedEchoServer
}

func (echoServer) Unary(ctx context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	rpc.SetHeader(ctx, metadata.Pairs("h", "echo"))
	rpc.SetTrailer(ctx, metadata.Pairs("t", "echo"))
	switch in.Message {
	case "fail":
		return nil, status.Error(codes.NotFound, "asked to fail")
	case "auth":
		md, _ := metadata.FromIncomingContext(ctx)
		return &echov1.EchoResponse{Message: strings.Join(md.Get("authorization"), ";")}, nil
	}
	return &echov1.EchoResponse{Message: in.Message}, nil
}

func (echoServer) ServerStream(in *echov1.ServerStreamRequest, s rpc.ServerStreamingServer[echov1.EchoResponse]) error {
	s.SetHeader(metadata.Pairs("h", "echo-stream"))
	s.SetTrailer(metadata.Pairs("t", "echo-stream"))
	for range in.Count {
		if err := s.Send(&echov1.EchoResponse{Message: in.Message}); err != nil {
			return err
		}
	}
	if in.Message == "fail" {
		return status.Error(codes.NotFound, "asked to fail")
	}
	return nil
}

func (echoServer) Bidi(s rpc.BidiStreamingServer[echov1.EchoRequest, echov1.EchoResponse]) error {
	s.SetHeader(metadata.Pairs("h", "echo-bidi"))
	s.SetTrailer(metadata.Pairs("t", "echo-bidi"))
	for {
		in, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if in.Message == "fail" {
			return status.Error(codes.NotFound, "asked to fail")
		}
		if err := s.Send(&echov1.EchoResponse{Message: in.Message}); err != nil {
			return err
		}
	}
}

// drain receives until the stream ends and returns how many messages
// came and the error that ended it (nil for io.EOF).
func drain[T any](s interface{ Recv() (*T, error) }) (int, error) {
	n := 0
	for {
		_, err := s.Recv()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

func sizes(n ...int32) []*testgrpc.ResponseParameters {
	out := make([]*testgrpc.ResponseParameters, len(n))
	for i, s := range n {
		out[i] = &testgrpc.ResponseParameters{Size: s}
	}
	return out
}
