// Command callbacks shows muxrpc's two directions on one connection: a
// client calls the server, and the server calls back a service the client
// exposes, inside a handler and outside any.
//
// By default the server and the client run in one process, on a loopback
// port:
//
//	go run ./examples/callbacks
//
// or in two processes:
//
//	go run ./examples/callbacks -listen 127.0.0.1:7070
//	go run ./examples/callbacks -connect 127.0.0.1:7070
//
// The server serves gRPC's reflection service too, so that muxrpcurl, a
// module of its own, lists, describes and calls its methods:
//
//	(cd rpc/cmd/muxrpcurl && go run . 127.0.0.1:7070 list)
//	(cd rpc/cmd/muxrpcurl && go run . -d '{"message":"hi"}' 127.0.0.1:7070 muxrpc.echo.v1.Echo/Unary)
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
	"strings"
	"sync"
	"syscall"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func main() {
	listen := flag.String("listen", "", "only serve, on this address")
	connect := flag.String("connect", "", "only run the client, against this address")
	flag.Parse()

	ctx := context.Background()
	var err error
	switch {
	case *listen != "":
		err = serveForever(*listen)
	case *connect != "":
		err = runClient(ctx, os.Stdout, *connect)
	default:
		err = runBoth(ctx, os.Stdout)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runBoth serves on a loopback port and runs the client against it.
func runBoth(ctx context.Context, out io.Writer) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := newServer(out)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	err = runClient(ctx, out, lis.Addr().String())
	srv.GracefulStop()
	return errors.Join(err, <-served) // Serve returns nil after GracefulStop
}

func serveForever(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	log.Printf("serving on %s", lis.Addr())
	srv := newServer(os.Stdout)
	// Ctrl-C or SIGTERM stops the server gracefully: every client gets a
	// GoAway, the calls in flight finish, and Serve returns nil.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	return srv.Serve(lis)
}

// newServer returns the Echo server, with gRPC's reflection service, so
// that tools such as rpc/cmd/muxrpcurl can list, describe and call its
// methods. It greets every client that connects through the client's own
// Notifier, before the client has called anything.
func newServer(out io.Writer) *rpc.Server {
	srv := rpc.NewServer(rpc.OnPeer(func(p *rpc.Peer) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := echov1.NewNotifierClient(p).Notify(ctx, &echov1.Notification{Message: "welcome, " + p.RemoteAddr().Network() + " client"})
		switch {
		case status.Code(err) == codes.Unimplemented: // a client that serves no Notifier, muxrpcurl say
			fmt.Fprintf(out, "server: the client at %s serves no Notifier; not greeted\n", p.RemoteAddr())
		case err != nil:
			fmt.Fprintf(out, "server: greeting failed: %v\n", err)
		}
	}))
	echov1.RegisterEchoServer(srv, &echoServer{})
	reflection.Register(grpcstub.Registrar(srv))
	return srv
}

// runClient dials addr exposing a Notifier, then makes one call of each
// kind; the server's Announce calls the Notifier back.
func runClient(ctx context.Context, out io.Writer, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	callbacks := rpc.NewServer()
	n := &notifier{out: out, welcomed: make(chan struct{})}
	echov1.RegisterNotifierServer(callbacks, n)
	peer, err := rpc.Dial(ctx, addr, rpc.WithServices(callbacks))
	if err != nil {
		return err
	}
	// Shutdown, unlike Close, lets the calls in flight in both directions
	// finish first: here the answer to the server's greeting.
	defer peer.Shutdown(ctx)
	select { // the server's greeting, pushed outside any call
	case <-n.welcomed:
	case <-ctx.Done():
		return ctx.Err()
	}
	echo := echov1.NewEchoClient(peer)

	resp, err := echo.Unary(ctx, &echov1.EchoRequest{Message: "hello"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "unary: %s\n", resp.Message)

	stream, err := echo.ServerStream(ctx, &echov1.ServerStreamRequest{Message: "tick", Count: 3})
	if err != nil {
		return err
	}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "server stream: %s #%d\n", r.Message, r.Sequence)
	}

	up, err := echo.ClientStream(ctx)
	if err != nil {
		return err
	}
	for _, w := range []string{"one", "two", "three"} {
		if err := up.Send(&echov1.EchoRequest{Message: w}); err != nil {
			return err
		}
	}
	joined, err := up.CloseAndRecv()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "client stream: %s\n", joined.Message)

	bidi, err := echo.Bidi(ctx)
	if err != nil {
		return err
	}
	for _, w := range []string{"ping", "pong"} {
		if err := bidi.Send(&echov1.EchoRequest{Message: w}); err != nil {
			return err
		}
		r, err := bidi.Recv()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "bidi: %s\n", r.Message)
	}
	if err := bidi.CloseSend(); err != nil {
		return err
	}
	if _, err := bidi.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("bidi: want the end of the stream, got %v", err)
	}

	ann, err := echo.Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"first", "second"}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "announce: the server delivered %d notifications to this client\n", ann.Delivered)
	return nil
}

// echoServer implements Echo. Announce calls the caller back.
type echoServer struct {
	echov1.UnimplementedEchoServer
}

func (echoServer) Unary(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: req.Message}, nil
}

func (echoServer) ServerStream(req *echov1.ServerStreamRequest, stream echov1.Echo_ServerStreamServer) error {
	for i := range req.Count {
		if err := stream.Send(&echov1.EchoResponse{Message: req.Message, Sequence: int64(i)}); err != nil {
			return err
		}
	}
	return nil
}

func (echoServer) ClientStream(stream echov1.Echo_ClientStreamServer) error {
	var words []string
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&echov1.EchoResponse{Message: strings.Join(words, ",")})
		}
		if err != nil {
			return err
		}
		words = append(words, req.Message)
	}
}

func (echoServer) Bidi(stream echov1.Echo_BidiServer) error {
	for i := int64(0); ; i++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&echov1.EchoResponse{Message: req.Message, Sequence: i}); err != nil {
			return err
		}
	}
}

// Announce calls the caller's Notifier, on the caller's own connection.
func (echoServer) Announce(ctx context.Context, req *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	caller := echov1.NewNotifierClient(rpc.PeerFromContext(ctx))
	var delivered int32
	for i, m := range req.Messages {
		if _, err := caller.Notify(ctx, &echov1.Notification{Message: m, Sequence: int64(i)}); err != nil {
			return nil, err
		}
		delivered++
	}
	return &echov1.AnnounceResponse{Delivered: delivered}, nil
}

// notifier is the service the client exposes to the server.
type notifier struct {
	echov1.UnimplementedNotifierServer
	out      io.Writer
	once     sync.Once
	welcomed chan struct{}
}

func (n *notifier) Notify(ctx context.Context, note *echov1.Notification) (*emptypb.Empty, error) {
	fmt.Fprintf(n.out, "client: the server called back: %q\n", note.Message)
	n.once.Do(func() { close(n.welcomed) })
	return &emptypb.Empty{}, nil
}
