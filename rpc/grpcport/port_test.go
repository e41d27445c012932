package grpcport_test

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
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcport"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a muxrpc-generated service whose handlers use the rpc package's
// metadata functions, so that serving it over gRPC shows they work there.
type echo struct {
	echov1.UnimplementedEchoServer
}

func (echo) Unary(ctx context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	rpc.SetHeader(ctx, metadata.Pairs("h", "header-"+in.Message))
	rpc.SetTrailer(ctx, metadata.Pairs("t", "trailer-"+in.Message))
	method, _ := rpc.Method(ctx)
	switch in.Message {
	case "sleep":
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case "fail":
		st, _ := status.New(codes.FailedPrecondition, "not now").WithDetails(&errdetails.ErrorInfo{Reason: "BUSY", Domain: "test"})
		return nil, st.Err()
	case "panic":
		panic("boom")
	case "who":
		id, ok := rpc.IdentityFromContext(ctx)
		return &echov1.EchoResponse{Message: fmt.Sprintf("%s %v", id.Name, ok)}, nil
	case "peer":
		p, _ := peer.FromContext(ctx)
		_, tlsOK := p.AuthInfo.(credentials.TLSInfo)
		return &echov1.EchoResponse{Message: fmt.Sprintf("tls=%v callbacks=%v", tlsOK, rpc.PeerFromContext(ctx) != nil)}, nil
	}
	return &echov1.EchoResponse{Message: in.Message + " " + method + " " + strings.Join(md.Get("x-who"), ",")}, nil
}

func (echo) ServerStream(in *echov1.ServerStreamRequest, stream rpc.ServerStreamingServer[echov1.EchoResponse]) error {
	stream.SetHeader(metadata.Pairs("h", "stream"))
	for i := range in.Count {
		if err := stream.Send(&echov1.EchoResponse{Message: in.Message, Sequence: int64(i)}); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("t", "stream"))
	return nil
}

func (echo) ClientStream(stream rpc.ClientStreamingServer[echov1.EchoRequest, echov1.EchoResponse]) error {
	var got []string
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&echov1.EchoResponse{Message: strings.Join(got, ",")})
		}
		if err != nil {
			return err
		}
		got = append(got, in.Message)
	}
}

func (echo) Bidi(stream rpc.BidiStreamingServer[echov1.EchoRequest, echov1.EchoResponse]) error {
	for i := int64(0); ; i++ {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&echov1.EchoResponse{Message: in.Message, Sequence: i}); err != nil {
			return err
		}
	}
}

// port is a muxrpc server with the echo service on a shared port.
type port struct {
	addr  string
	port  *grpcport.Server
	calls atomic.Int64 // calls the server's unary interceptor saw
	done  chan error
}

func startPort(t *testing.T, tr mux.Transport, opts []rpc.ServerOption, popts ...grpcport.Option) *port {
	t.Helper()
	p := &port{done: make(chan error, 1)}
	count := rpc.ChainUnaryServer(func(ctx context.Context, req any, info *rpc.UnaryServerInfo, h rpc.UnaryHandler) (any, error) {
		p.calls.Add(1)
		return h(ctx, req)
	})
	quiet := rpc.WithLogger(slog.New(slog.DiscardHandler)) // the handler that panics on purpose is logged
	srv := rpc.NewServer(append([]rpc.ServerOption{count, quiet, rpc.MuxConfig(&mux.Config{Transport: tr})}, opts...)...)
	echov1.RegisterEchoServer(srv, echo{})
	p.port = grpcport.New(srv, popts...)
	lis := listen(t)
	p.addr = lis.Addr().String()
	go func() { p.done <- p.port.Serve(lis) }()
	t.Cleanup(func() {
		p.port.Stop()
		select {
		case err := <-p.done:
			if !errors.Is(err, grpcport.ErrServerStopped) {
				t.Errorf("Serve returned %v, want ErrServerStopped", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Stop")
		}
	})
	return p
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func grpcDial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var transports = []struct {
	name string
	tr   mux.Transport
}{{"native", mux.Native}, {"smux", mux.Smux}}

// TestGRPCClientOnSharedPort calls the four kinds of methods of a muxrpc
// service from gRPC-Go's own client, and from a muxrpc client on the
// same port, with metadata, status details, deadlines and interceptors.
func TestGRPCClientOnSharedPort(t *testing.T) {
	for _, tc := range transports {
		t.Run(tc.name, func(t *testing.T) {
			p := startPort(t, tc.tr, nil)
			cc := grpcDial(t, p.addr, insecure.NewCredentials())
			ctx := metadata.AppendToOutgoingContext(ctxFor(t, 20*time.Second), "x-who", "grpc")

			// Unary, with metadata both ways.
			var header, trailer metadata.MD
			out := new(echov1.EchoResponse)
			if err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "hi"}, out, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
				t.Fatal(err)
			}
			if want := "hi " + echov1.Echo_Unary_FullMethodName + " grpc"; out.Message != want {
				t.Errorf("reply %q, want %q", out.Message, want)
			}
			if got := header.Get("h"); len(got) != 1 || got[0] != "header-hi" {
				t.Errorf("header h = %v", got)
			}
			if got := trailer.Get("t"); len(got) != 1 || got[0] != "trailer-hi" {
				t.Errorf("trailer t = %v", got)
			}

			// A status with details.
			err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "fail"}, out)
			st := status.Convert(err)
			if st.Code() != codes.FailedPrecondition || st.Message() != "not now" || len(st.Details()) != 1 {
				t.Fatalf("failing call: %v (details %v)", err, st.Details())
			}
			if info, ok := st.Details()[0].(*errdetails.ErrorInfo); !ok || info.Reason != "BUSY" {
				t.Errorf("details %v", st.Details())
			}

			// A deadline reaches the handler.
			dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			err = cc.Invoke(dctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "sleep"}, out)
			cancel()
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("sleeping call: %v, want DeadlineExceeded", err)
			}

			// A handler's panic is the call's Internal error, and the server goes on.
			err = cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "panic"}, out)
			if status.Code(err) != codes.Internal {
				t.Errorf("panicking call: %v, want Internal", err)
			}

			// Unknown methods and services.
			err = cc.Invoke(ctx, "/muxrpc.echo.v1.Echo/Nope", &echov1.EchoRequest{}, out)
			if status.Code(err) != codes.Unimplemented {
				t.Errorf("unknown method: %v", err)
			}

			// A gRPC caller exposes no services.
			if err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "peer"}, out); err != nil || out.Message != "tls=false callbacks=false" {
				t.Errorf("peer: %v %q", err, out.GetMessage())
			}

			// Server streaming.
			ss, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, echov1.Echo_ServerStream_FullMethodName)
			if err != nil {
				t.Fatal(err)
			}
			if err := ss.SendMsg(&echov1.ServerStreamRequest{Message: "s", Count: 3}); err != nil {
				t.Fatal(err)
			}
			ss.CloseSend()
			for i := range 3 {
				if err := ss.RecvMsg(out); err != nil || out.Sequence != int64(i) {
					t.Fatalf("stream response %d: %v %v", i, err, out)
				}
			}
			if err := ss.RecvMsg(out); err != io.EOF {
				t.Fatalf("end of stream: %v", err)
			}
			if h, _ := ss.Header(); len(h.Get("h")) != 1 || len(ss.Trailer().Get("t")) != 1 {
				t.Errorf("stream metadata: %v %v", h, ss.Trailer())
			}

			// Client streaming.
			cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, echov1.Echo_ClientStream_FullMethodName)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{"a", "b", "c"} {
				if err := cs.SendMsg(&echov1.EchoRequest{Message: m}); err != nil {
					t.Fatal(err)
				}
			}
			cs.CloseSend()
			if err := cs.RecvMsg(out); err != nil || out.Message != "a,b,c" {
				t.Fatalf("client stream: %v %q", err, out.GetMessage())
			}

			// Bidirectional streaming.
			bs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, echov1.Echo_Bidi_FullMethodName)
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range []string{"x", "y"} {
				if err := bs.SendMsg(&echov1.EchoRequest{Message: m}); err != nil {
					t.Fatal(err)
				}
				if err := bs.RecvMsg(out); err != nil || out.Message != m || out.Sequence != int64(i) {
					t.Fatalf("bidi %d: %v %v", i, err, out)
				}
			}
			bs.CloseSend()
			if err := bs.RecvMsg(out); err != io.EOF {
				t.Fatalf("bidi end: %v", err)
			}

			// A muxrpc client on the same port.
			mp, err := rpc.Dial(ctx, p.addr, rpc.MuxConfig(&mux.Config{Transport: tc.tr}))
			if err != nil {
				t.Fatal(err)
			}
			defer mp.Close()
			mctx := metadata.AppendToOutgoingContext(ctxFor(t, 10*time.Second), "x-who", "muxrpc")
			got, err := echov1.NewEchoClient(mp).Unary(mctx, &echov1.EchoRequest{Message: "hi"})
			if err != nil || got.Message != "hi "+echov1.Echo_Unary_FullMethodName+" muxrpc" {
				t.Fatalf("muxrpc call: %v %v", err, got)
			}
			if got, err := echov1.NewEchoClient(mp).Unary(mctx, &echov1.EchoRequest{Message: "peer"}); err != nil || got.Message != "tls=false callbacks=true" {
				t.Errorf("muxrpc peer: %v %v", err, got)
			}

			// The server's interceptor ran for every unary call of both
			// protocols that reached a method: five of gRPC's, two of muxrpc's.
			if n := p.calls.Load(); n != 7 {
				t.Errorf("the unary interceptor saw %d calls, want 7", n)
			}
		})
	}
}

// TestAuthenticatorOnGRPCCalls checks that a Server's Authenticator,
// which admits muxrpc sessions, decides each gRPC call too.
func TestAuthenticatorOnGRPCCalls(t *testing.T) {
	auth := rpc.WithAuthenticator(func(ctx context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		if tok := h.Metadata.Get("token"); len(tok) == 1 && tok[0] == "secret" {
			return rpc.Identity{Name: "alice"}, nil
		}
		return rpc.Identity{}, status.Error(codes.PermissionDenied, "bad token")
	})
	p := startPort(t, mux.Native, []rpc.ServerOption{auth})
	cc := grpcDial(t, p.addr, insecure.NewCredentials())
	ctx := ctxFor(t, 10*time.Second)
	out := new(echov1.EchoResponse)
	err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "who"}, out)
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "bad token" {
		t.Fatalf("call without a token: %v", err)
	}
	if p.calls.Load() != 0 {
		t.Error("the interceptor ran for a refused call")
	}
	ss, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, echov1.Echo_ServerStream_FullMethodName)
	if err == nil {
		ss.SendMsg(&echov1.ServerStreamRequest{Count: 1})
		err = ss.RecvMsg(out)
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream without a token: %v", err)
	}
	ok := metadata.AppendToOutgoingContext(ctx, "token", "secret")
	if err := cc.Invoke(ok, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "who"}, out); err != nil || out.Message != "alice true" {
		t.Fatalf("call with a token: %v %q", err, out.GetMessage())
	}
}

// TestTLSPort serves both protocols over TLS on one port, telling them
// apart by ALPN.
func TestTLSPort(t *testing.T) {
	serverTLS, pool := selfSigned(t)
	p := startPort(t, mux.Native, nil, grpcport.WithTLS(serverTLS))
	ctx := ctxFor(t, 10*time.Second)
	cc := grpcDial(t, p.addr, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"}))
	out := new(echov1.EchoResponse)
	if err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "peer"}, out); err != nil || out.Message != "tls=true callbacks=false" {
		t.Fatalf("gRPC over TLS: %v %q", err, out.GetMessage())
	}
	mp, err := rpc.Dial(ctx, p.addr, rpc.WithTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"}))
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	if got, err := echov1.NewEchoClient(mp).Unary(ctx, &echov1.EchoRequest{Message: "peer"}); err != nil || got.Message != "tls=true callbacks=true" {
		t.Fatalf("muxrpc over TLS: %v %v", err, got)
	}
	// A plaintext client gets nothing from a TLS port.
	plain := grpcDial(t, p.addr, insecure.NewCredentials())
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := plain.Invoke(short, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{}, out); err == nil {
		t.Fatal("a plaintext gRPC call on a TLS port succeeded")
	}
}

func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
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
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// TestMessageLimitsOnGRPCCalls checks that gRPC calls on the port get the
// rpc.Server's message size limits.
func TestMessageLimitsOnGRPCCalls(t *testing.T) {
	p := startPort(t, mux.Native, []rpc.ServerOption{rpc.MaxRecvMsgSize(1024)})
	cc := grpcDial(t, p.addr, insecure.NewCredentials())
	ctx := ctxFor(t, 10*time.Second)
	out := new(echov1.EchoResponse)
	if err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: strings.Repeat("x", 900)}, out); err != nil {
		t.Fatalf("a request under the limit: %v", err)
	}
	err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: strings.Repeat("x", 2000)}, out)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a request over the limit: %v, want ResourceExhausted", err)
	}
}
