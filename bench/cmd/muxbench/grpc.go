package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/muxrpc/muxrpc/bench/proto/benchgrpc"
	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer/leastrequest"
	"google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// grpcFramework is gRPC-Go with its defaults, over plaintext HTTP/2.
var grpcFramework = &framework{
	name:        "grpc",
	multiplexes: true,
	compresses:  true,
	serve:       serveGRPC,
	dial:        dialGRPC,
	dialFleet:   dialGRPCFleet,
}

// grpcBench adapts the Bench service to gRPC's generated server interface.
type grpcBench struct {
	benchgrpc.UnimplementedBenchServer
	b *benchServer
}

func (s grpcBench) Unary(_ context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return s.b.unary(in), nil
}

func (s grpcBench) ServerStream(req *benchpb.Payload, st grpc.ServerStreamingServer[benchpb.Payload]) error {
	return s.b.serverStream(st.Context(), req, st.Send)
}

func (s grpcBench) ClientStream(st grpc.ClientStreamingServer[benchpb.Payload, benchpb.Payload]) error {
	sum, err := s.b.clientStream(st.Recv)
	if err != nil {
		return err
	}
	return st.SendAndClose(sum)
}

func (s grpcBench) Bidi(st grpc.BidiStreamingServer[benchpb.Payload, benchpb.Payload]) error {
	return s.b.bidi(st.Recv, st.Send)
}

type grpcServer struct{ srv *grpc.Server }

func serveGRPC(lis net.Listener, b *benchServer) (server, error) {
	srv := grpc.NewServer()
	benchgrpc.RegisterBenchServer(srv, grpcBench{b: b})
	go srv.Serve(lis)
	return grpcServer{srv}, nil
}

func (grpcServer) callbackPeer(context.Context) (unaryCaller, error) {
	return nil, errors.New("gRPC has no calls from server to client on the client's connection")
}

func (s grpcServer) stop() { s.srv.Stop() }

// grpcConn is one gRPC ClientConn: one HTTP/2 connection once connected.
type grpcConn struct {
	cc     *grpc.ClientConn
	client benchgrpc.BenchClient
}

func dialGRPC(_ context.Context, addr string, o dialOptions) (conn, error) {
	if o.callback != nil {
		return nil, errors.New("gRPC has no calls from server to client on the client's connection")
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &grpcConn{cc: cc, client: benchgrpc.NewBenchClient(cc)}, nil
}

func (c *grpcConn) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in)
}

// grpcGzip compresses a gRPC call by gzip, which importing
// google.golang.org/grpc/encoding/gzip registered for both sides (the
// server needs nothing more: it answers with the caller's compressor); the
// one slice for every call, so that passing it allocates nothing.
var grpcGzip = []grpc.CallOption{grpc.UseCompressor(gzip.Name)}

func (c *grpcConn) unaryGzip(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in, grpcGzip...)
}

func (c *grpcConn) serverStream(ctx context.Context, req *benchpb.Payload) (receiver, error) {
	return c.client.ServerStream(ctx, req)
}

func (c *grpcConn) bidi(ctx context.Context) (bidiStream, error) {
	return c.client.Bidi(ctx)
}

func (c *grpcConn) close() error { return c.cc.Close() }

// grpcFleetConn is one gRPC ClientConn over a fleet's servers: a
// subchannel, one HTTP/2 connection, to each.
type grpcFleetConn struct {
	cc     *grpc.ClientConn
	client benchgrpc.BenchClient
	opts   []grpc.CallOption
}

// dialGRPCFleet makes a ClientConn over addrs, given by a manual resolver
// of its own, balanced by round_robin (or least_request_experimental),
// with the fleet's backoff.
func dialGRPCFleet(_ context.Context, addrs []string, o fleetOptions) (fleetConn, error) {
	r := manual.NewBuilderWithScheme("fleet")
	var st resolver.State
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	policy := roundrobin.Name
	if o.leastOutstanding {
		policy = leastrequest.Name
	}
	cc, err := grpc.NewClient(r.Scheme()+":///fleet",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, policy)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: fleetBackoff.Backoff, MinConnectTimeout: fleetBackoff.MinConnectTimeout}))
	if err != nil {
		return nil, err
	}
	c := &grpcFleetConn{cc: cc, client: benchgrpc.NewBenchClient(cc)}
	if o.waitForReady {
		c.opts = append(c.opts, grpc.WaitForReady(true))
	}
	return c, nil
}

func (c *grpcFleetConn) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in, c.opts...)
}

func (c *grpcFleetConn) close() error { return c.cc.Close() }
