package interceptors_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The test service, written as generated code would be: test.Echo with
// two unary methods and one streaming method of each kind, on
// wrapperspb.StringValue.

type echoServer interface {
	Unary(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	Ping(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	ServerStream(*wrapperspb.StringValue, rpc.ServerStreamingServer[wrapperspb.StringValue]) error
	ClientStream(rpc.ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error
	Bidi(rpc.BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error
}

type stringStream = rpc.GenericServerStream[wrapperspb.StringValue, wrapperspb.StringValue]

func unaryHandler(name string, call func(echoServer, context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)) rpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor rpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return call(srv.(echoServer), ctx, in)
		}
		info := &rpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Echo/" + name}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return call(srv.(echoServer), ctx, req.(*wrapperspb.StringValue))
		})
	}
}

var echoDesc = rpc.ServiceDesc{
	ServiceName: "test.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []rpc.MethodDesc{
		{MethodName: "Unary", Handler: unaryHandler("Unary", echoServer.Unary)},
		{MethodName: "Ping", Handler: unaryHandler("Ping", echoServer.Ping)},
	},
	Streams: []rpc.StreamDesc{
		{StreamName: "ServerStream", ServerStreams: true, Handler: func(srv any, stream rpc.ServerStream) error {
			in := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(echoServer).ServerStream(in, &stringStream{ServerStream: stream})
		}},
		{StreamName: "ClientStream", ClientStreams: true, Handler: func(srv any, stream rpc.ServerStream) error {
			return srv.(echoServer).ClientStream(&stringStream{ServerStream: stream})
		}},
		{StreamName: "Bidi", ServerStreams: true, ClientStreams: true, Handler: func(srv any, stream rpc.ServerStream) error {
			return srv.(echoServer).Bidi(&stringStream{ServerStream: stream})
		}},
	},
	Metadata: "test/echo.proto",
}

type stringClientStream = rpc.GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]

type echoClient struct{ cc rpc.ClientConnInterface }

func (c echoClient) Unary(ctx context.Context, in *wrapperspb.StringValue, opts ...rpc.CallOption) (*wrapperspb.StringValue, error) {
	out := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, "/test.Echo/Unary", in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

func (c echoClient) Ping(ctx context.Context, in *wrapperspb.StringValue, opts ...rpc.CallOption) (*wrapperspb.StringValue, error) {
	out := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, "/test.Echo/Ping", in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

func (c echoClient) ServerStream(ctx context.Context, in *wrapperspb.StringValue, opts ...rpc.CallOption) (rpc.ServerStreamingClient[wrapperspb.StringValue], error) {
	stream, err := c.cc.NewStream(ctx, &echoDesc.Streams[0], "/test.Echo/ServerStream", opts...)
	if err != nil {
		return nil, err
	}
	x := &stringClientStream{ClientStream: stream}
	if err := x.SendMsg(in); err != nil {
		return nil, err
	}
	if err := x.CloseSend(); err != nil {
		return nil, err
	}
	return x, nil
}

func (c echoClient) ClientStream(ctx context.Context, opts ...rpc.CallOption) (rpc.ClientStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue], error) {
	stream, err := c.cc.NewStream(ctx, &echoDesc.Streams[1], "/test.Echo/ClientStream", opts...)
	if err != nil {
		return nil, err
	}
	return &stringClientStream{ClientStream: stream}, nil
}

func (c echoClient) Bidi(ctx context.Context, opts ...rpc.CallOption) (rpc.BidiStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue], error) {
	stream, err := c.cc.NewStream(ctx, &echoDesc.Streams[2], "/test.Echo/Bidi", opts...)
	if err != nil {
		return nil, err
	}
	return &stringClientStream{ClientStream: stream}, nil
}

// echoImpl echoes with a prefix, so tests can tell who answered. Special
// requests trigger failures: "panic" panics, "fail" fails with
// FailedPrecondition, "wait" waits for the call's end.
type echoImpl struct {
	name string
}

func (e *echoImpl) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	switch {
	case in.Value == "panic":
		panic("asked to")
	case in.Value == "fail":
		return nil, status.Error(codes.FailedPrecondition, "asked to fail")
	case strings.HasPrefix(in.Value, "wait"):
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return wrapperspb.String(e.name + ":" + in.Value), nil
}

func (e *echoImpl) Ping(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(e.name + ":pong"), nil
}

func (e *echoImpl) ServerStream(in *wrapperspb.StringValue, s rpc.ServerStreamingServer[wrapperspb.StringValue]) error {
	if in.Value == "panic" {
		panic("asked to")
	}
	for i := 0; i < 3; i++ {
		if err := s.Send(wrapperspb.String(e.name + ":" + in.Value)); err != nil {
			return err
		}
	}
	return nil
}

func (e *echoImpl) ClientStream(s rpc.ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	var all []string
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(wrapperspb.String(e.name + ":" + strings.Join(all, ",")))
		}
		if err != nil {
			return err
		}
		all = append(all, in.Value)
	}
}

func (e *echoImpl) Bidi(s rpc.BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(wrapperspb.String(e.name + ":" + in.Value)); err != nil {
			return err
		}
	}
}

// serve starts srv on a loopback listener and returns its address; the
// server stops when the test ends.
func serve(t testing.TB, srv *rpc.Server) string {
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

// dial connects to addr and closes the peer when the test ends.
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

// testCtx returns a context that bounds a test's calls.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoServe serves impl (an *echoImpl when nil) as test.Echo with opts and
// returns a client of it.
func echoServe(t testing.TB, impl echoServer, opts []rpc.ServerOption, dialOpts ...rpc.DialOption) (echoClient, *rpc.Peer) {
	t.Helper()
	if impl == nil {
		impl = &echoImpl{name: "server"}
	}
	srv := rpc.NewServer(opts...)
	srv.RegisterService(&echoDesc, impl)
	p := dial(t, serve(t, srv), dialOpts...)
	return echoClient{p}, p
}

// recvAll reads a server stream to its end.
func recvAll(s rpc.ServerStreamingClient[wrapperspb.StringValue]) ([]string, error) {
	var got []string
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, m.Value)
	}
}

// wantCode fails the test unless err carries code.
func wantCode(t testing.TB, err error, code codes.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); !ok {
		if _, ok := status.FromError(err); !ok {
			t.Fatalf("error %v (%T) carries no status", err, err)
		}
	}
	if got := status.Code(err); got != code {
		t.Fatalf("got %v (%v), want %v", got, err, code)
	}
}
