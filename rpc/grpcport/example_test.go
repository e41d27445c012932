package grpcport_test

import (
	"context"
	"fmt"
	"log"
	"net"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcport"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"github.com/muxrpc/muxrpc/rpc/health"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
)

type greeter struct{ echov1.UnimplementedEchoServer }

func (greeter) Unary(ctx context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: "hello, " + in.Message}, nil
}

// One port serves a muxrpc service to muxrpc clients and to gRPC
// clients, with health checks and reflection for gRPC's tools (grpcurl,
// grpc-health-probe, Kubernetes' gRPC probes).
func ExampleNew() {
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, greeter{})
	health.Register(srv, health.NewServer())     // grpc.health.v1.Health
	reflection.Register(grpcstub.Registrar(srv)) // grpc.reflection.v1 and v1alpha
	port := grpcport.New(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go port.Serve(lis)
	defer port.GracefulStop()
	ctx := context.Background()

	// A muxrpc client.
	peer, err := rpc.Dial(ctx, lis.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer peer.Close()
	got, err := echov1.NewEchoClient(peer).Unary(ctx, &echov1.EchoRequest{Message: "muxrpc"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.Message)

	// gRPC-Go's own client, on the same port.
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	reply := new(echov1.EchoResponse)
	if err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "gRPC"}, reply); err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Message)
	// Output:
	// hello, muxrpc
	// hello, gRPC
}
