package main

import (
	"context"
	"errors"
	"net"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
	"storj.io/drpc/drpcconn"
	"storj.io/drpc/drpcmux"
	"storj.io/drpc/drpcserver"
)

// drpcFramework is DRPC with its defaults. A DRPC connection carries one
// call at a time: concurrent calls on it wait for each other.
var drpcFramework = &framework{
	name:  "drpc",
	serve: serveDRPC,
	dial:  dialDRPC,
	deviations: []string{
		"drpc: a connection carries one call at a time (drpcmanager's stream semaphore), so W2, W3 and W6 (concurrent calls on one connection) run serialised, as DRPC itself queues them, and marked †; W7 and W8 do not apply.",
	},
}

// drpcBench adapts the Bench service to DRPC's generated server interface.
type drpcBench struct{ b *benchServer }

func (s drpcBench) Unary(_ context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return s.b.unary(in), nil
}

func (s drpcBench) ServerStream(req *benchpb.Payload, st benchpb.DRPCBench_ServerStreamStream) error {
	return s.b.serverStream(st.Context(), req, st.Send)
}

func (s drpcBench) ClientStream(st benchpb.DRPCBench_ClientStreamStream) error {
	sum, err := s.b.clientStream(st.Recv)
	if err != nil {
		return err
	}
	return st.SendAndClose(sum)
}

func (s drpcBench) Bidi(st benchpb.DRPCBench_BidiStream) error {
	return s.b.bidi(st.Recv, st.Send)
}

type drpcServer struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func serveDRPC(lis net.Listener, b *benchServer) (server, error) {
	m := drpcmux.New()
	if err := benchpb.DRPCRegisterBench(m, drpcBench{b}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := drpcServer{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		drpcserver.New(m).Serve(ctx, lis)
	}()
	return s, nil
}

func (drpcServer) callbackPeer(context.Context) (unaryCaller, error) {
	return nil, errors.New("DRPC has no calls from server to client on the client's connection")
}

func (s drpcServer) stop() {
	s.cancel()
	<-s.done
}

// drpcConn is one DRPC connection.
type drpcConn struct {
	conn   *drpcconn.Conn
	client benchpb.DRPCBenchClient
}

func dialDRPC(ctx context.Context, addr string, o dialOptions) (conn, error) {
	if o.callback != nil {
		return nil, errors.New("DRPC has no calls from server to client on the client's connection")
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := drpcconn.New(nc)
	return &drpcConn{conn: c, client: benchpb.NewDRPCBenchClient(c)}, nil
}

func (c *drpcConn) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return c.client.Unary(ctx, in)
}

func (c *drpcConn) serverStream(ctx context.Context, req *benchpb.Payload) (receiver, error) {
	return c.client.ServerStream(ctx, req)
}

func (c *drpcConn) bidi(ctx context.Context) (bidiStream, error) {
	return c.client.Bidi(ctx)
}

func (c *drpcConn) close() error { return c.conn.Close() }
