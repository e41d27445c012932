package interceptors_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/timeout"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A server and a client with go-grpc-middleware's interceptors: the
// server recovers from panics and wants a bearer token, the client bounds
// and retries its calls.
func Example() {
	panicked := recovery.WithRecoveryHandler(func(p any) error {
		return status.Errorf(codes.Internal, "recovered from %v", p)
	})
	srv := rpc.NewServer(
		interceptors.UnaryServer(recovery.UnaryServerInterceptor(panicked), auth.UnaryServerInterceptor(checkToken)),
		interceptors.StreamServer(recovery.StreamServerInterceptor(panicked), auth.StreamServerInterceptor(checkToken)),
	)
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"}) // generated code: pb.RegisterEchoServer(srv, impl)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()

	ctx := context.Background()
	peer, err := rpc.Dial(ctx, ln.Addr().String(),
		interceptors.UnaryClient(timeout.UnaryClientInterceptor(5*time.Second), retry.UnaryClientInterceptor()),
		interceptors.StreamClient(retry.StreamClientInterceptor()),
	)
	if err != nil {
		panic(err)
	}
	defer peer.Close()
	client := echoClient{peer} // generated code: pb.NewEchoClient(peer)

	_, err = client.Unary(ctx, wrapperspb.String("hi"))
	fmt.Println(status.Code(err))

	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "bearer secret")
	out, err := client.Unary(ctx, wrapperspb.String("hi"), retry.WithMax(3))
	fmt.Println(out.GetValue(), err)

	_, err = client.Unary(ctx, wrapperspb.String("panic"))
	fmt.Println(status.Convert(err).Message())
	// Output:
	// Unauthenticated
	// server:hi <nil>
	// recovered from asked to
}
