package main

import (
	"context"
	"net"
	"strings"
	"sync"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/encoding/gzip"
)

// muxrpcNative is muxrpc with its defaults, on its own framing.
var muxrpcNative = newMuxrpcFramework("muxrpc-native", mux.Native)

// muxrpcSmux is muxrpc with its defaults but for the transport: sessions
// speak smux's framing (mux.Smux).
var muxrpcSmux = newMuxrpcFramework("muxrpc-smux", mux.Smux)

func newMuxrpcFramework(name string, t mux.Transport) *framework {
	cfg := &mux.Config{Transport: t}
	return &framework{
		name:        name,
		multiplexes: true,
		callbacks:   true,
		compresses:  true,
		serve: func(lis net.Listener, b *benchServer) (server, error) {
			return serveMuxrpc(lis, b, cfg)
		},
		dial: func(ctx context.Context, addr string, o dialOptions) (conn, error) {
			return dialMuxrpc(ctx, addr, cfg, o)
		},
		dialFleet: func(_ context.Context, addrs []string, o fleetOptions) (fleetConn, error) {
			return dialMuxrpcFleet(addrs, cfg, o)
		},
	}
}

// muxrpcBench adapts the Bench service to muxrpc's generated server
// interface.
type muxrpcBench struct {
	benchpb.UnimplementedBenchServer
	b *benchServer
}

func (s muxrpcBench) Unary(_ context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return s.b.unary(in), nil
}

func (s muxrpcBench) ServerStream(req *benchpb.Payload, st rpc.ServerStreamingServer[benchpb.Payload]) error {
	return s.b.serverStream(st.Context(), req, st.Send)
}

func (s muxrpcBench) ClientStream(st rpc.ClientStreamingServer[benchpb.Payload, benchpb.Payload]) error {
	sum, err := s.b.clientStream(st.Recv)
	if err != nil {
		return err
	}
	return st.SendAndClose(sum)
}

func (s muxrpcBench) Bidi(st rpc.BidiStreamingServer[benchpb.Payload, benchpb.Payload]) error {
	return s.b.bidi(st.Recv, st.Send)
}

// muxrpcCallback adapts the Callback service the client serves in W7.
type muxrpcCallback struct {
	benchpb.UnimplementedCallbackServer
	c *callbackService
}

func (s muxrpcCallback) Unary(_ context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return s.c.unary(in), nil
}

type muxrpcServer struct {
	srv *rpc.Server
	// callback makes the caller of a peer's Callback service (W7).
	callback  func(*rpc.Peer) unaryCaller
	once      sync.Once
	first     *rpc.Peer     // the peer that connected first, for callbackPeer
	connected chan struct{} // closed once first is set
}

func serveMuxrpc(lis net.Listener, b *benchServer, cfg *mux.Config) (server, error) {
	s := newMuxrpcServer(cfg, func(p *rpc.Peer) unaryCaller {
		return muxrpcCallbackCaller{benchpb.NewCallbackClient(p)}
	})
	benchpb.RegisterBenchServer(s.srv, muxrpcBench{b: b})
	go s.srv.Serve(lis)
	return s, nil
}

// newMuxrpcServer returns a muxrpcServer whose rpc.Server, with no
// services yet, notes the first peer that connects.
func newMuxrpcServer(cfg *mux.Config, callback func(*rpc.Peer) unaryCaller) *muxrpcServer {
	s := &muxrpcServer{callback: callback, connected: make(chan struct{})}
	s.srv = rpc.NewServer(rpc.MuxConfig(cfg), rpc.OnPeer(func(p *rpc.Peer) {
		s.once.Do(func() {
			s.first = p
			close(s.connected)
		})
	}))
	return s
}

// muxrpcCallbackCaller calls the Callback service of one client.
type muxrpcCallbackCaller struct{ client benchpb.CallbackClient }

func (c muxrpcCallbackCaller) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in)
}

func (s *muxrpcServer) callbackPeer(ctx context.Context) (unaryCaller, error) {
	select {
	case <-s.connected:
		return s.callback(s.first), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *muxrpcServer) stop() { s.srv.Stop() }

// muxrpcConn is the client's side of one muxrpc session.
type muxrpcConn struct {
	peer   *rpc.Peer
	client benchpb.BenchClient
}

func dialMuxrpc(ctx context.Context, addr string, cfg *mux.Config, o dialOptions) (conn, error) {
	opts := []rpc.DialOption{rpc.MuxConfig(cfg)}
	if o.callback != nil {
		callbacks := rpc.NewServer()
		benchpb.RegisterCallbackServer(callbacks, muxrpcCallback{c: o.callback})
		opts = append(opts, rpc.WithServices(callbacks))
	}
	p, err := rpc.Dial(ctx, addr, opts...)
	if err != nil {
		return nil, err
	}
	return &muxrpcConn{peer: p, client: benchpb.NewBenchClient(p)}, nil
}

func (c *muxrpcConn) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in)
}

// unaryUrgent makes a unary call at mux.PriorityHigh, so that it goes
// ahead of the bulk of calls at normal priority on the same session.
func (c *muxrpcConn) unaryUrgent(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in, rpc.CallPriority(mux.PriorityHigh))
}

// muxrpcGzip compresses a muxrpc call by gzip, the compressor of gRPC's
// registry that grpc.go's import of google.golang.org/grpc/encoding/gzip
// registers; the one slice for every call.
var muxrpcGzip = []rpc.CallOption{rpc.UseCompressor(gzip.Name)}

func (c *muxrpcConn) unaryGzip(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in, muxrpcGzip...)
}

func (c *muxrpcConn) serverStream(ctx context.Context, req *benchpb.Payload) (receiver, error) {
	return c.client.ServerStream(ctx, req)
}

func (c *muxrpcConn) bidi(ctx context.Context) (bidiStream, error) {
	return c.client.Bidi(ctx)
}

func (c *muxrpcConn) close() error { return c.peer.Close() }

// muxrpcFleetConn is one rpc.Client over a fleet's servers: a session to
// each.
type muxrpcFleetConn struct {
	c      *rpc.Client
	client benchpb.BenchClient
	opts   []rpc.CallOption
}

// dialMuxrpcFleet makes an rpc.Client over addrs, a static: target,
// balanced by RoundRobin (or LeastOutstanding), with the fleet's backoff.
func dialMuxrpcFleet(addrs []string, cfg *mux.Config, o fleetOptions) (fleetConn, error) {
	b := rpc.RoundRobin
	if o.leastOutstanding {
		b = rpc.LeastOutstanding
	}
	c, err := rpc.NewClient("static:///"+strings.Join(addrs, ","),
		rpc.MuxConfig(cfg), rpc.WithBalancer(b), rpc.WithConnectParams(fleetBackoff))
	if err != nil {
		return nil, err
	}
	fc := &muxrpcFleetConn{c: c, client: benchpb.NewBenchClient(c)}
	if o.waitForReady {
		fc.opts = append(fc.opts, rpc.WaitForReady(true))
	}
	return fc, nil
}

func (c *muxrpcFleetConn) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in, c.opts...)
}

func (c *muxrpcFleetConn) close() error { return c.c.Close() }
