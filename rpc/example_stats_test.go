package rpc_test

import (
	"context"
	"fmt"
	"net"
	"strings"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// printStats is a stats.Handler that prints the events of the calls its
// side makes.
type printStats struct{}

func (printStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	fmt.Println("call", info.FullMethodName)
	return ctx
}

func (printStats) HandleRPC(_ context.Context, s stats.RPCStats) {
	if !s.IsClient() {
		return // a call this side serves
	}
	name := strings.TrimPrefix(fmt.Sprintf("%T", s), "*stats.")
	switch s := s.(type) {
	case *stats.OutPayload:
		fmt.Printf("%s: %d bytes, %d on the wire\n", name, s.Length, s.WireLength)
	case *stats.InPayload:
		fmt.Printf("%s: %d bytes, %d on the wire\n", name, s.Length, s.WireLength)
	case *stats.End:
		fmt.Printf("%s: %v\n", name, status.Code(s.Error))
	default:
		fmt.Println(name)
	}
}

func (printStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (printStats) HandleConn(_ context.Context, s stats.ConnStats) {
	if b, ok := s.(*stats.ConnBegin); ok {
		fmt.Println("session begins; client side:", b.Client)
	}
}

// WithStatsHandler installs a gRPC stats.Handler: it hears of the
// sessions and calls of its side, in the order and with the fields
// gRPC-Go gives it, so that metrics and tracing built on it work on
// muxrpc. Handlers written for one role, as OpenTelemetry's are, go in
// with WithRoleStatsHandlers instead, on servers and clients alike:
//
//	rpc.WithRoleStatsHandlers(otelgrpc.NewClientHandler(), otelgrpc.NewServerHandler())
func ExampleWithStatsHandler() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, echoServer{name: "s"})
	go srv.Serve(lis)
	defer srv.Stop()

	ctx := context.Background()
	p, err := rpc.Dial(ctx, lis.Addr().String(), rpc.WithStatsHandler(printStats{}))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	if _, err := echov1.NewEchoClient(p).Unary(ctx, &echov1.EchoRequest{Message: "hi"}); err != nil {
		panic(err)
	}
	// Output:
	// session begins; client side: true
	// call /muxrpc.echo.v1.Echo/Unary
	// Begin
	// OutHeader
	// OutPayload: 4 bytes, 9 on the wire
	// InHeader
	// InPayload: 10 bytes, 15 on the wire
	// InTrailer
	// End: OK
}
