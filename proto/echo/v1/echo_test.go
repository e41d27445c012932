package echov1_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
)

// These tests run the generated code (echo_muxrpc.pb.go) against a live
// muxrpc server over loopback TCP.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer implements the Echo service the way a user would: embedding
// UnimplementedEchoServer and using only the generated types.
type echoServer struct {
	echov1.UnimplementedEchoServer
}

func (echoServer) Unary(ctx context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	if in.Message == "fail" {
		return nil, status.Error(codes.FailedPrecondition, "asked to fail")
	}
	return &echov1.EchoResponse{Message: in.Message}, nil
}

func (echoServer) ServerStream(in *echov1.ServerStreamRequest, stream echov1.Echo_ServerStreamServer) error {
	for i := range in.Count {
		if err := stream.Send(&echov1.EchoResponse{Message: in.Message, Sequence: int64(i)}); err != nil {
			return err
		}
	}
	return nil
}

func (echoServer) ClientStream(stream echov1.Echo_ClientStreamServer) error {
	var all []string
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&echov1.EchoResponse{Message: strings.Join(all, ","), Sequence: int64(len(all))})
		}
		if err != nil {
			return err
		}
		all = append(all, in.Message)
	}
}

func (echoServer) Bidi(stream echov1.Echo_BidiServer) error {
	for i := int64(0); ; i++ {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
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

// Announce calls the caller back, through the Peer the call came on.
func (echoServer) Announce(ctx context.Context, in *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	caller := echov1.NewNotifierClient(rpc.PeerFromContext(ctx))
	var delivered int32
	for i, m := range in.Messages {
		if _, err := caller.Notify(ctx, &echov1.Notification{Message: m, Sequence: int64(i)}); err != nil {
			return &echov1.AnnounceResponse{Delivered: delivered}, err
		}
		delivered++
	}
	return &echov1.AnnounceResponse{Delivered: delivered}, nil
}

// notifier is the client's callback service.
type notifier struct {
	echov1.UnimplementedNotifierServer
	mu   sync.Mutex
	got  []string
	peer *rpc.Peer // the Peer the last notification came on
}

func (n *notifier) Notify(ctx context.Context, in *echov1.Notification) (*emptypb.Empty, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, fmt.Sprintf("%d:%s", in.Sequence, in.Message))
	n.peer = rpc.PeerFromContext(ctx)
	return &emptypb.Empty{}, nil
}

// serve serves srv on a loopback listener until the test ends.
func serve(t *testing.T, srv *rpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, opts ...rpc.DialOption) *rpc.Peer {
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

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a server with the Echo service, and returns a client of it
// whose connection serves n as the client's Notifier.
func setup(t *testing.T, n *notifier, opts ...rpc.ServerOption) (echov1.EchoClient, *rpc.Peer) {
	srv := rpc.NewServer(opts...)
	echov1.RegisterEchoServer(srv, echoServer{})
	addr := serve(t, srv)
	callbacks := rpc.NewServer()
	if n != nil {
		echov1.RegisterNotifierServer(callbacks, n)
	}
	p := dial(t, addr, rpc.WithServices(callbacks))
	return echov1.NewEchoClient(p), p
}

func TestUnary(t *testing.T) {
	ctx := testCtx(t)
	client, _ := setup(t, nil)
	out, err := client.Unary(ctx, &echov1.EchoRequest{Message: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Message != "hello" {
		t.Fatalf("got %q", out.Message)
	}
	_, err = client.Unary(ctx, &echov1.EchoRequest{Message: "fail"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
}

func TestServerStream(t *testing.T) {
	ctx := testCtx(t)
	client, _ := setup(t, nil)
	var stream echov1.Echo_ServerStreamClient // the alias names the generic type
	stream, err := client.ServerStream(ctx, &echov1.ServerStreamRequest{Message: "tick", Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); ; i++ {
		out, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if i != 5 {
				t.Fatalf("%d responses, want 5", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if out.Message != "tick" || out.Sequence != i {
			t.Fatalf("response %d: %v", i, out)
		}
	}
}

func TestClientStream(t *testing.T) {
	ctx := testCtx(t)
	client, _ := setup(t, nil)
	stream, err := client.ClientStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b", "c"} {
		if err := stream.Send(&echov1.EchoRequest{Message: m}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if out.Message != "a,b,c" || out.Sequence != 3 {
		t.Fatalf("got %v", out)
	}
}

func TestBidi(t *testing.T) {
	ctx := testCtx(t)
	client, _ := setup(t, nil)
	stream, err := client.Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each request is answered before the next is sent.
	for i, m := range []string{"x", "y", "z"} {
		if err := stream.Send(&echov1.EchoRequest{Message: m}); err != nil {
			t.Fatal(err)
		}
		out, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if out.Message != m || out.Sequence != int64(i) {
			t.Fatalf("got %v for %q", out, m)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want io.EOF", err)
	}
}

// TestCallback has the server call the client's Notifier on the client's
// own connection, in the middle of the client's call.
func TestCallback(t *testing.T) {
	ctx := testCtx(t)
	n := &notifier{}
	client, p := setup(t, n)
	out, err := client.Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"one", "two"}})
	if err != nil {
		t.Fatal(err)
	}
	if out.Delivered != 2 {
		t.Fatalf("delivered %d, want 2", out.Delivered)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if strings.Join(n.got, " ") != "0:one 1:two" {
		t.Fatalf("notifications %q", n.got)
	}
	if n.peer != p {
		t.Fatal("the notifications did not arrive on the client's own Peer")
	}
}

// TestCallbackUnserved calls back a client that serves nothing.
func TestCallbackUnserved(t *testing.T) {
	ctx := testCtx(t)
	client, _ := setup(t, nil)
	out, err := client.Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"one"}})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("got %v, %v; want Unimplemented", out, err)
	}
}

// TestUnimplemented checks what UnimplementedEchoServer answers, for each
// kind of call.
func TestUnimplemented(t *testing.T) {
	ctx := testCtx(t)
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, echov1.UnimplementedEchoServer{})
	client := echov1.NewEchoClient(dial(t, serve(t, srv)))

	check := func(name string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "method "+name+" not implemented") {
			t.Errorf("%s: got %v", name, err)
		}
	}
	_, err := client.Unary(ctx, &echov1.EchoRequest{})
	check("Unary", err)

	ss, err := client.ServerStream(ctx, &echov1.ServerStreamRequest{})
	if err == nil {
		_, err = ss.Recv()
	}
	check("ServerStream", err)

	cs, err := client.ClientStream(ctx)
	if err == nil {
		_, err = cs.CloseAndRecv()
	}
	check("ClientStream", err)

	bs, err := client.Bidi(ctx)
	if err == nil {
		_, err = bs.Recv()
	}
	check("Bidi", err)
}

// TestInterceptor checks the interceptor path of the generated unary
// handler and the full method names interceptors see.
func TestInterceptor(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var seen []string
	unary := func(ctx context.Context, req any, info *rpc.UnaryServerInfo, handler rpc.UnaryHandler) (any, error) {
		mu.Lock()
		seen = append(seen, info.FullMethod)
		mu.Unlock()
		if _, ok := info.Server.(echov1.EchoServer); !ok {
			return nil, status.Errorf(codes.Internal, "info.Server is %T", info.Server)
		}
		in := req.(*echov1.EchoRequest)
		in.Message = "intercepted " + in.Message
		return handler(ctx, in)
	}
	stream := func(srv any, ss rpc.ServerStream, info *rpc.StreamServerInfo, handler rpc.StreamHandler) error {
		mu.Lock()
		seen = append(seen, info.FullMethod)
		mu.Unlock()
		return handler(srv, ss)
	}
	client, _ := setup(t, nil, rpc.ChainUnaryServer(unary), rpc.ChainStreamServer(stream))
	out, err := client.Unary(ctx, &echov1.EchoRequest{Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Message != "intercepted hi" {
		t.Fatalf("got %q", out.Message)
	}
	bs, err := client.Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{echov1.Echo_Unary_FullMethodName, echov1.Echo_Bidi_FullMethodName}
	if strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Fatalf("interceptors saw %q, want %q", seen, want)
	}
	if want[0] != "/muxrpc.echo.v1.Echo/Unary" {
		t.Fatalf("full method name %q", want[0])
	}
}

// TestRegisterNilEmbedded checks that RegisterEchoServer refuses an
// implementation embedding a nil *UnimplementedEchoServer at once.
func TestRegisterNilEmbedded(t *testing.T) {
	type partial struct {
		*echov1.UnimplementedEchoServer
	}
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	echov1.RegisterEchoServer(rpc.NewServer(), partial{})
}

// TestServiceInfo checks the descriptors the server registered.
func TestServiceInfo(t *testing.T) {
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, echoServer{})
	echov1.RegisterNotifierServer(srv, &notifier{})
	info := srv.GetServiceInfo()
	echo, ok := info["muxrpc.echo.v1.Echo"]
	if !ok || len(echo.Methods) != 5 || echo.Metadata != "echo/v1/echo.proto" {
		t.Fatalf("Echo: %+v", echo)
	}
	kinds := map[string]string{}
	for _, m := range echo.Methods {
		kinds[m.Name] = fmt.Sprint(m.IsClientStream, m.IsServerStream)
	}
	want := map[string]string{
		"Unary": "false false", "ServerStream": "false true", "ClientStream": "true false",
		"Bidi": "true true", "Announce": "false false",
	}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("methods %v, want %v", kinds, want)
	}
	if _, ok := info["muxrpc.echo.v1.Notifier"]; !ok {
		t.Fatal("no Notifier")
	}
}
