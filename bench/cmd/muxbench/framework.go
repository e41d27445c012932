package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
)

// A framework is one of the RPC frameworks compared, both of its sides:
// serve runs the Bench service on a listener in the server child, dial
// connects the client child to it.
type framework struct {
	name string
	// multiplexes says whether one connection carries concurrent calls;
	// for a framework that does not, multi-caller workloads on one
	// connection are serialised, and W8 does not apply.
	multiplexes bool
	// callbacks says whether the server can call a service the client
	// exposes on the client's own connection (W7).
	callbacks bool
	// compresses says whether a call's messages can be compressed by a
	// call option, both ways (W3-gzip); its conns are gzipCallers.
	compresses bool
	// deviations lists how this framework's setup departs from its
	// defaults, and why; the report prints them.
	deviations []string

	serve func(lis net.Listener, b *benchServer) (server, error)
	dial  func(ctx context.Context, addr string, o dialOptions) (conn, error)
	// dialFleet makes one client over the servers at addrs, balancing
	// calls over them (W9, W10); nil for a framework without one.
	dialFleet func(ctx context.Context, addrs []string, o fleetOptions) (fleetConn, error)
}

// dialOptions are what a workload asks of a connection beyond the defaults.
type dialOptions struct {
	// callback, if set, is served to the server on the connection (W7).
	callback *callbackService
}

// A server is a framework's running server.
type server interface {
	// callbackPeer returns a way to call the Callback service of the
	// client connected first, waiting for it to connect (W7).
	callbackPeer(ctx context.Context) (unaryCaller, error)
	// stop ends the server and its connections.
	stop()
}

// A unaryCaller makes unary calls of Unary, on Bench or on Callback.
type unaryCaller interface {
	unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error)
}

// A conn is a client's connection to a framework's server.
type conn interface {
	unaryCaller
	// serverStream calls ServerStream with req.
	serverStream(ctx context.Context, req *benchpb.Payload) (receiver, error)
	// bidi opens a call of Bidi.
	bidi(ctx context.Context) (bidiStream, error)
	close() error
}

// A priorityCaller is a conn whose framework can mark a unary call as
// urgent, to be sent ahead of the bulk data of other calls on the same
// connection. W8 measures a third phase, under load with urgent calls, on
// every conn that implements it: muxrpc's, with rpc.CallPriority.
type priorityCaller interface {
	unaryUrgent(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error)
}

// A gzipCaller is a conn whose framework compresses a call's messages by
// a call option: unaryGzip makes a unary call compressed by gzip (gRPC's
// google.golang.org/grpc/encoding/gzip), which the callee answers
// compressed by it too (W3-gzip).
type gzipCaller interface {
	unaryGzip(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error)
}

// A receiver is the caller's side of a server stream.
type receiver interface {
	Recv() (*benchpb.Payload, error)
}

// A bidiStream is the caller's side of a call of Bidi.
type bidiStream interface {
	Send(*benchpb.Payload) error
	Recv() (*benchpb.Payload, error)
	CloseSend() error
}

// frameworks are the frameworks compared, in the report's column order.
var frameworks = []*framework{grpcFramework, grpcSharedPort, drpcFramework, muxrpcNative, muxrpcGRPCStub, muxrpcSmux, rawFramework}

// frameworkNamed returns the framework called name.
func frameworkNamed(name string) (*framework, error) {
	var names []string
	for _, f := range frameworks {
		if f.name == name {
			return f, nil
		}
		names = append(names, f.name)
	}
	return nil, fmt.Errorf("unknown framework %q (known: %s)", name, strings.Join(names, ", "))
}
