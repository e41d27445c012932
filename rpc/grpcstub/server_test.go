package grpcstub_test

import (
	"context"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestRegistrarHandlersMetadata checks that the handlers of a service
// registered through Registrar, on a Server without interceptors, reach
// grpc.SetHeader, grpc.SendHeader, grpc.SetTrailer and grpc.Method, on
// unary and streaming calls.
func TestRegistrarHandlersMetadata(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		s := start(t, tr)
		if u, st := s.srv.Interceptors(); u != nil || st != nil {
			t.Fatal("the test's server has interceptors")
		}
		ctx := testCtx(t, 20*time.Second)
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))

		var h, tl metadata.MD
		out, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&h), grpc.Trailer(&tl))
		if err != nil {
			t.Fatal(err)
		}
		if out.OauthScope != testgrpc.TestService_UnaryCall_FullMethodName {
			t.Errorf("grpc.Method in a unary handler: %q", out.OauthScope)
		}
		wantMD(t, "unary header", h, "h", "unary")
		wantMD(t, "unary trailer", tl, "t", "unary")

		// The handler checks grpc.Method itself and fails if it is wrong.
		ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := drain(ss); err != nil {
			t.Fatalf("server stream: %v", err)
		}
		sh, _ := ss.Header()
		wantMD(t, "server stream header", sh, "h", "server-stream")
		wantMD(t, "server stream trailer", ss.Trailer(), "t", "server-stream")

		// grpc.SendHeader: the header arrives before any message.
		bs, err := tc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bh, err := bs.Header()
		if err != nil {
			t.Fatal(err)
		}
		wantMD(t, "bidi header sent first", bh, "h", "bidi")
		bs.CloseSend()
		if _, err := drain(bs); err != nil {
			t.Fatal(err)
		}
		wantMD(t, "bidi trailer", bs.Trailer(), "t", "bidi")
	})
}

// A TestService served as muxrpc-generated code serves it, and the Echo
// service as protoc-gen-go-grpc would generate it: the two generators'
// code talk to each other, for the wire is the same.

type muxrpcTestService interface {
	UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error)
	StreamingOutputCall(*testgrpc.StreamingOutputCallRequest, rpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error
}

var muxrpcTestServiceDesc = rpc.ServiceDesc{
	ServiceName: "grpc.testing.TestService",
	HandlerType: (*muxrpcTestService)(nil),
	Methods: []rpc.MethodDesc{{
		MethodName: "UnaryCall",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor rpc.UnaryServerInterceptor) (any, error) {
			in := new(testgrpc.SimpleRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(muxrpcTestService).UnaryCall(ctx, in)
		},
	}},
	Streams: []rpc.StreamDesc{{
		StreamName: "StreamingOutputCall",
		Handler: func(srv any, stream rpc.ServerStream) error {
			in := new(testgrpc.StreamingOutputCallRequest)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(muxrpcTestService).StreamingOutputCall(in, &rpc.GenericServerStream[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]{ServerStream: stream})
		},
		ServerStreams: true,
	}},
}

type muxrpcTestServer struct{}

func (muxrpcTestServer) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	rpc.SetHeader(ctx, metadata.Pairs("h", "muxrpc"))
	return &testgrpc.SimpleResponse{Payload: in.Payload}, nil
}

func (muxrpcTestServer) StreamingOutputCall(in *testgrpc.StreamingOutputCallRequest, s rpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for _, p := range in.ResponseParameters {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: payload(int(p.Size))}); err != nil {
			return err
		}
	}
	return nil
}

type grpcEchoServer interface {
	Unary(context.Context, *echov1.EchoRequest) (*echov1.EchoResponse, error)
	ServerStream(*echov1.ServerStreamRequest, grpc.ServerStreamingServer[echov1.EchoResponse]) error
}

var grpcEchoDesc = grpc.ServiceDesc{
	ServiceName: "muxrpc.echo.v1.Echo",
	HandlerType: (*grpcEchoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(echov1.EchoRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(grpcEchoServer).Unary(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/muxrpc.echo.v1.Echo/Unary"}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(grpcEchoServer).Unary(ctx, req.(*echov1.EchoRequest))
			})
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName: "ServerStream",
		Handler: func(srv any, stream grpc.ServerStream) error {
			in := new(echov1.ServerStreamRequest)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(grpcEchoServer).ServerStream(in, &grpc.GenericServerStream[echov1.ServerStreamRequest, echov1.EchoResponse]{ServerStream: stream})
		},
		ServerStreams: true,
	}},
}

type grpcEchoImpl struct{}

func (grpcEchoImpl) Unary(ctx context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("h", "grpc-echo"))
	grpc.SetTrailer(ctx, metadata.Pairs("t", "grpc-echo"))
	if m, _ := grpc.Method(ctx); m != "/muxrpc.echo.v1.Echo/Unary" {
		return nil, status.Errorf(codes.Internal, "grpc.Method = %q", m)
	}
	return &echov1.EchoResponse{Message: "grpc:" + in.Message}, nil
}

func (grpcEchoImpl) ServerStream(in *echov1.ServerStreamRequest, s grpc.ServerStreamingServer[echov1.EchoResponse]) error {
	grpc.SetHeader(s.Context(), metadata.Pairs("h", "grpc-echo-stream"))
	for range in.Count {
		if err := s.Send(&echov1.EchoResponse{Message: "grpc:" + in.Message}); err != nil {
			return err
		}
	}
	return nil
}

// TestGeneratorsInterwork checks that gRPC's generated client calls a
// service served as muxrpc's generated code serves it, and that muxrpc's
// generated client calls a service registered with gRPC's generated
// description through Registrar.
func TestGeneratorsInterwork(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := rpc.NewServer(muxOpt(tr))
		srv.RegisterService(&muxrpcTestServiceDesc, muxrpcTestServer{})
		grpcstub.Registrar(srv).RegisterService(&grpcEchoDesc, grpcEchoImpl{})
		ln := listen(t)
		serveOn(t, srv, ln)
		p := dial(t, ln.Addr().String(), muxOpt(tr))
		ctx := testCtx(t, 20*time.Second)

		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(p))
		var h metadata.MD
		out, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload(7)}, grpc.Header(&h))
		if err != nil || len(out.GetPayload().GetBody()) != 7 {
			t.Fatalf("grpc client, muxrpc service: %v, %v", out, err)
		}
		wantMD(t, "grpc client, muxrpc service: header", h, "h", "muxrpc")
		ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1, 2, 3)})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := drain(ss); n != 3 || err != nil {
			t.Errorf("grpc client, muxrpc stream: %d, %v", n, err)
		}

		ec := echov1.NewEchoClient(p)
		var eh, et metadata.MD
		eo, err := ec.Unary(ctx, &echov1.EchoRequest{Message: "x"}, rpc.Header(&eh), grpc.Trailer(&et))
		if err != nil || eo.Message != "grpc:x" {
			t.Fatalf("muxrpc client, grpc service: %v, %v", eo, err)
		}
		wantMD(t, "muxrpc client, grpc service: header", eh, "h", "grpc-echo")
		wantMD(t, "muxrpc client, grpc service: trailer", et, "t", "grpc-echo")
		es, err := ec.ServerStream(ctx, &echov1.ServerStreamRequest{Message: "y", Count: 2}, grpc.Header(&eh))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := drain(es); n != 2 || err != nil {
			t.Errorf("muxrpc client, grpc stream: %d, %v", n, err)
		}
		wantMD(t, "muxrpc client, grpc stream: header", eh, "h", "grpc-echo-stream")
	})
}

// TestServerCallsClient checks the other direction: the server calls a
// TestService that the client exposes (registered through Registrar),
// with grpc.Header and grpc.Trailer.
func TestServerCallsClient(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		peers := make(chan *rpc.Peer, 1)
		srv := rpc.NewServer(muxOpt(tr), rpc.OnPeer(func(p *rpc.Peer) { peers <- p }))
		ln := listen(t)
		serveOn(t, srv, ln)
		clientSrv := rpc.NewServer()
		testgrpc.RegisterTestServiceServer(grpcstub.Registrar(clientSrv), &testServer{})
		dial(t, ln.Addr().String(), muxOpt(tr), rpc.WithServices(clientSrv))
		var p *rpc.Peer
		select {
		case p = <-peers:
		case <-time.After(10 * time.Second):
			t.Fatal("no peer connected")
		}
		ctx := testCtx(t, 20*time.Second)
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(p))

		var h, tl metadata.MD
		out, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 5}, grpc.Header(&h), grpc.Trailer(&tl))
		if err != nil || len(out.GetPayload().GetBody()) != 5 {
			t.Fatalf("server to client unary: %v, %v", out, err)
		}
		wantMD(t, "callback unary header", h, "h", "unary")
		wantMD(t, "callback unary trailer", tl, "t", "unary")

		h, tl = nil, nil
		bs, err := tc.FullDuplexCall(ctx, grpc.Header(&h), grpc.Trailer(&tl))
		if err != nil {
			t.Fatal(err)
		}
		bs.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1, 2)})
		bs.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: failWith(codes.PermissionDenied, "callback says no")})
		n, err := drain(bs)
		if n != 2 {
			t.Errorf("callback bidi: %d responses, want 2", n)
		}
		wantCode(t, err, codes.PermissionDenied, "callback says no")
		wantMD(t, "callback bidi header", h, "h", "bidi")
		wantMD(t, "callback bidi trailer", tl, "t", "bidi")

		h = nil
		ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(3)}, grpc.Header(&h))
		if err != nil {
			t.Fatal(err)
		}
		if n, err := drain(ss); n != 1 || err != nil {
			t.Errorf("callback server stream: %d, %v", n, err)
		}
		wantMD(t, "callback server stream header", h, "h", "server-stream")
	})
}
