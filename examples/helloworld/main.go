// Command helloworld is the smallest complete muxrpc program: a Greeter
// server and a client that calls its one method, SayHello, from
// proto/helloworld/v1.
//
// By default the server and the client run in one process, on a loopback
// port:
//
//	go run ./examples/helloworld
//
// or in two processes (the server stops gracefully on Ctrl-C or SIGTERM):
//
//	go run ./examples/helloworld -listen 127.0.0.1:7070
//	go run ./examples/helloworld -connect 127.0.0.1:7070
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	helloworldv1 "github.com/muxrpc/muxrpc/proto/helloworld/v1"
	"github.com/muxrpc/muxrpc/rpc"
)

func main() {
	listen := flag.String("listen", "", "only serve, on this address")
	connect := flag.String("connect", "", "only run the client, against this address")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *listen != "":
		var lis net.Listener
		if lis, err = net.Listen("tcp", *listen); err == nil {
			log.Printf("serving on %s", lis.Addr())
			err = serve(ctx, lis, os.Stdout)
		}
	case *connect != "":
		err = greet(ctx, os.Stdout, *connect)
	default:
		err = runBoth(ctx, os.Stdout)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runBoth serves on a loopback port, greets the world through it, and
// stops the server.
func runBoth(ctx context.Context, out io.Writer) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srvCtx, stopServer := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(srvCtx, lis, out) }()
	err = greet(ctx, out, lis.Addr().String())
	stopServer()
	return errors.Join(err, <-served)
}

// serve serves Greeter on lis until ctx ends, then stops gracefully:
// calls in flight finish, and Serve returns nil.
func serve(ctx context.Context, lis net.Listener, out io.Writer) error {
	srv := rpc.NewServer()
	helloworldv1.RegisterGreeterServer(srv, greeter{out: out})
	defer context.AfterFunc(ctx, srv.GracefulStop)()
	return srv.Serve(lis)
}

type greeter struct {
	helloworldv1.UnimplementedGreeterServer
	out io.Writer // where the server prints the calls it serves
}

func (g greeter) SayHello(ctx context.Context, req *helloworldv1.HelloRequest) (*helloworldv1.HelloReply, error) {
	fmt.Fprintf(g.out, "server: SayHello(%q)\n", req.Name)
	return &helloworldv1.HelloReply{Message: "Hello, " + req.Name}, nil
}

// greet dials the server at addr and asks it to greet the world.
func greet(ctx context.Context, out io.Writer, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peer, err := rpc.Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer peer.Close()
	reply, err := helloworldv1.NewGreeterClient(peer).SayHello(ctx, &helloworldv1.HelloRequest{Name: "world"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Greeting: %s\n", reply.Message)
	return nil
}
