package grpcstub_test

import (
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// TestUseCompressor compresses calls of gRPC's generated code with
// grpc.UseCompressor, gzip registered as a gRPC-Go program registers it,
// and refuses a compressor nobody registered.
func TestUseCompressor(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		s := start(t, tr)
		ctx := testCtx(t, 20*time.Second)
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
		body := make([]byte, 64<<10)
		reply, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 1 << 16, Payload: &testgrpc.Payload{Body: body}}, grpc.UseCompressor(gzip.Name))
		if err != nil {
			t.Fatalf("a gzip call: %v", err)
		}
		if n := len(reply.GetPayload().GetBody()); n != 1<<16 {
			t.Fatalf("a gzip call answered %d bytes, want %d", n, 1<<16)
		}
		_, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.UseCompressor("nobody-registered-this"))
		wantCode(t, err, codes.Internal, "nobody-registered-this")
	})
}
