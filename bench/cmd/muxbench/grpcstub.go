package main

import (
	"context"
	"net"
	"strings"

	"github.com/muxrpc/muxrpc/bench/proto/benchgrpc"
	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"google.golang.org/grpc"
)

// muxrpcGRPCStub is muxrpc-native's transport and server run with
// gRPC-Go's generated code (protoc-gen-go-grpc's benchgrpc) through
// rpc/grpcstub: the service registered by benchgrpc.RegisterBenchServer on
// grpcstub.Registrar(srv), the calls made by benchgrpc's client over
// grpcstub.Conn(peer).
var muxrpcGRPCStub = newGRPCStubFramework("muxrpc-grpcstub", mux.Native)

func newGRPCStubFramework(name string, t mux.Transport) *framework {
	cfg := &mux.Config{Transport: t}
	return &framework{
		name:        name,
		multiplexes: true,
		callbacks:   true,
		compresses:  true,
		serve: func(lis net.Listener, b *benchServer) (server, error) {
			return serveGRPCStub(lis, b, cfg)
		},
		dial: func(ctx context.Context, addr string, o dialOptions) (conn, error) {
			return dialGRPCStub(ctx, addr, cfg, o)
		},
		dialFleet: func(_ context.Context, addrs []string, o fleetOptions) (fleetConn, error) {
			return dialGRPCStubFleet(addrs, cfg, o)
		},
	}
}

// grpcCallback adapts the Callback service the client serves in W7 to
// gRPC's generated server interface.
type grpcCallback struct {
	benchgrpc.UnimplementedCallbackServer
	c *callbackService
}

func (s grpcCallback) Unary(_ context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return s.c.unary(in), nil
}

// grpcCallbackCaller calls the Callback service of one client with gRPC's
// generated client.
type grpcCallbackCaller struct{ client benchgrpc.CallbackClient }

func (c grpcCallbackCaller) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in)
}

func serveGRPCStub(lis net.Listener, b *benchServer, cfg *mux.Config) (server, error) {
	s := newMuxrpcServer(cfg, func(p *rpc.Peer) unaryCaller {
		return grpcCallbackCaller{benchgrpc.NewCallbackClient(grpcstub.Conn(p))}
	})
	benchgrpc.RegisterBenchServer(grpcstub.Registrar(s.srv), grpcBench{b: b})
	go s.srv.Serve(lis)
	return s, nil
}

// grpcStubConn is one muxrpc session called through gRPC's generated
// client.
type grpcStubConn struct {
	peer   *rpc.Peer
	client benchgrpc.BenchClient
}

func dialGRPCStub(ctx context.Context, addr string, cfg *mux.Config, o dialOptions) (conn, error) {
	opts := []rpc.DialOption{rpc.MuxConfig(cfg)}
	if o.callback != nil {
		callbacks := rpc.NewServer()
		benchgrpc.RegisterCallbackServer(grpcstub.Registrar(callbacks), grpcCallback{c: o.callback})
		opts = append(opts, rpc.WithServices(callbacks))
	}
	p, err := rpc.Dial(ctx, addr, opts...)
	if err != nil {
		return nil, err
	}
	return &grpcStubConn{peer: p, client: benchgrpc.NewBenchClient(grpcstub.Conn(p))}, nil
}

func (c *grpcStubConn) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in)
}

// unaryGzip passes gRPC's grpc.UseCompressor through grpcstub, which
// muxrpc's calls take as rpc.UseCompressor.
func (c *grpcStubConn) unaryGzip(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in, grpcGzip...)
}

func (c *grpcStubConn) serverStream(ctx context.Context, req *benchpb.Payload) (receiver, error) {
	return c.client.ServerStream(ctx, req)
}

func (c *grpcStubConn) bidi(ctx context.Context) (bidiStream, error) {
	return c.client.Bidi(ctx)
}

func (c *grpcStubConn) close() error { return c.peer.Close() }

// grpcStubFleetConn is one rpc.Client over a fleet's servers, called
// through gRPC's generated client.
type grpcStubFleetConn struct {
	c      *rpc.Client
	client benchgrpc.BenchClient
	opts   []grpc.CallOption
}

// dialGRPCStubFleet makes an rpc.Client as dialMuxrpcFleet does, and calls
// it through grpcstub.Conn; WaitForReady is gRPC's call option, which
// grpcstub passes on.
func dialGRPCStubFleet(addrs []string, cfg *mux.Config, o fleetOptions) (fleetConn, error) {
	b := rpc.RoundRobin
	if o.leastOutstanding {
		b = rpc.LeastOutstanding
	}
	c, err := rpc.NewClient("static:///"+strings.Join(addrs, ","),
		rpc.MuxConfig(cfg), rpc.WithBalancer(b), rpc.WithConnectParams(fleetBackoff))
	if err != nil {
		return nil, err
	}
	fc := &grpcStubFleetConn{c: c, client: benchgrpc.NewBenchClient(grpcstub.Conn(c))}
	if o.waitForReady {
		fc.opts = append(fc.opts, grpc.WaitForReady(true))
	}
	return fc, nil
}

func (c *grpcStubFleetConn) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in, c.opts...)
}

func (c *grpcStubFleetConn) close() error { return c.c.Close() }
