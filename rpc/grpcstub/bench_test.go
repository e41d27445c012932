package grpcstub_test

import (
	"context"
	"testing"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Services that answer with the request's payload and do nothing else,
// so that the benchmark measures the calls.

type benchTestServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (benchTestServer) UnaryCall(_ context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: in.Payload}, nil
}

type benchEchoServer struct {
	echov1.UnimplementedEchoServer
}

func (benchEchoServer) Unary(_ context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: in.Message}, nil
}

// BenchmarkUnary compares a unary call of gRPC's generated client over
// grpcstub, to a TestService registered through Registrar, with the
// equivalent call of muxrpc's generated client, on one loopback session
// of the native transport, a few bytes each way.
func BenchmarkUnary(b *testing.B) {
	srv := rpc.NewServer(muxOpt(mux.Native))
	testgrpc.RegisterTestServiceServer(grpcstub.Registrar(srv), benchTestServer{})
	echov1.RegisterEchoServer(srv, benchEchoServer{})
	ln := listen(b)
	serveOn(b, srv, ln)
	peer := dial(b, ln.Addr().String(), muxOpt(mux.Native))
	ctx := context.Background()
	b.Run("grpcstub", func(b *testing.B) {
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(peer))
		req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tc.UnaryCall(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("muxrpc", func(b *testing.B) {
		ec := echov1.NewEchoClient(peer)
		req := &echov1.EchoRequest{Message: "hello"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ec.Unary(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
