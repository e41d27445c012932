package rpc_test

import (
	"context"
	"fmt"
	"net"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/backoff"
)

// echoServer answers Unary with its name.
type echoServer struct {
	echov1.UnimplementedEchoServer
	name string
}

func (s echoServer) Unary(_ context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: s.name + " got " + in.Message}, nil
}

// serveEcho serves an echoServer on addr until the returned stop.
func serveEcho(addr, name string) (net.Addr, func()) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, echoServer{name: name})
	go srv.Serve(lis)
	return lis.Addr(), srv.GracefulStop
}

// A Client outlives its server: when the server restarts (here with
// GracefulStop, as in a deploy), the next call reconnects by itself.
// WaitForReady makes a call wait for the new session instead of failing
// while there is none.
func ExampleNewClient() {
	addr, stop := serveEcho("127.0.0.1:0", "first")

	client, err := rpc.NewClient(addr.String(),
		rpc.WithBalancer(rpc.RoundRobin), // over every address the name resolves to
		rpc.WithConnectParams(rpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, MaxDelay: time.Second}}))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	echo := echov1.NewEchoClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := echo.Unary(ctx, &echov1.EchoRequest{Message: "hello"})
	fmt.Println(resp.GetMessage(), err)

	stop()                                       // the server goes away...
	_, stop = serveEcho(addr.String(), "second") // ...and comes back
	defer stop()

	resp, err = echo.Unary(ctx, &echov1.EchoRequest{Message: "hello again"}, rpc.WaitForReady(true))
	fmt.Println(resp.GetMessage(), err)
	// Output:
	// first got hello <nil>
	// second got hello again <nil>
}
