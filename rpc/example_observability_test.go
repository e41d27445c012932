package rpc_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	_ "google.golang.org/grpc/encoding/gzip" // registers gzip, as in a gRPC-Go program
)

// panicky is a service whose handler panics, to show what the server
// logs.
type panicky struct{ echov1.UnimplementedEchoServer }

func (panicky) Unary(context.Context, *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	panic("the database handle is nil")
}

// A server logs a handler's panic, with the method, the peer and the
// stack, at Error; the caller gets Internal without the panic's text.
// Compression is a call option, with gRPC's compressors.
func ExampleWithLogger() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key { // left out, so that the output is the same on every run
			case slog.TimeKey, "peer", "stack":
				return slog.Attr{}
			}
			return a
		},
	}))
	srv := rpc.NewServer(rpc.WithLogger(logger))
	echov1.RegisterEchoServer(srv, panicky{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	ctx := context.Background()
	peer, err := rpc.Dial(ctx, lis.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer peer.Close()
	_, err = echov1.NewEchoClient(peer).Unary(ctx, &echov1.EchoRequest{Message: "hi"}, rpc.UseCompressor("gzip"))
	fmt.Println(err)
	// Output:
	// level=ERROR msg="rpc: handler panicked" method=/muxrpc.echo.v1.Echo/Unary panic="the database handle is nil"
	// rpc error: code = Internal desc = rpc: handler for /muxrpc.echo.v1.Echo/Unary panicked
}
