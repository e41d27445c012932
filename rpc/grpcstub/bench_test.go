package grpcstub_test

import (
	"context"
	"testing"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// BenchmarkUnary compares a unary call of gRPC's generated client over
// grpcstub, to a TestService registered through Registrar, with the
// equivalent call of muxrpc's generated client, on one loopback session
// of the native transport each.
func BenchmarkUnary(b *testing.B) {
	s := start(b, mux.Native)
	ctx := context.Background()
	b.Run("grpcstub", func(b *testing.B) {
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
		req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tc.UnaryCall(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("muxrpc", func(b *testing.B) {
		ec := echov1.NewEchoClient(s.peer)
		req := &echov1.EchoRequest{Message: "hello"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ec.Unary(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
