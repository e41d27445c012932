package main

import (
	"context"
	"errors"
	"net"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcport"
)

// grpcSharedPort is gRPC-Go's client, exactly as in grpcFramework, calling
// muxrpc's server through rpc/grpcport: the Bench service registered with
// muxrpc's generated code on an rpc.Server (muxrpcBench, as muxrpc-native
// serves it), served on a port that tells gRPC's HTTP/2 from muxrpc's
// preface and hands gRPC connections to gRPC-Go's own server.
var grpcSharedPort = &framework{
	name:        "grpc-sharedport",
	multiplexes: true,
	compresses:  true,
	deviations: []string{
		"grpc-sharedport: the client is the grpc column's (grpc.NewClient, insecure credentials); the server is muxrpc's rpc.NewServer() with the Bench service registered by muxrpc's generated RegisterBenchServer, served by grpcport.New(srv).Serve(lis), whose gRPC side is a grpc.Server that grpcport builds with rpc's message limits (4 MiB both ways, the same as gRPC-Go's receive default; gRPC-Go's send default is unlimited) and grpc.ConnectionTimeout(10 s) instead of gRPC-Go's 120 s.",
	},
	serve:     serveGRPCSharedPort,
	dial:      dialGRPC,
	dialFleet: dialGRPCFleet,
}

type grpcPortServer struct{ port *grpcport.Server }

func serveGRPCSharedPort(lis net.Listener, b *benchServer) (server, error) {
	srv := rpc.NewServer()
	benchpb.RegisterBenchServer(srv, muxrpcBench{b: b})
	port := grpcport.New(srv)
	go port.Serve(lis)
	return grpcPortServer{port}, nil
}

func (grpcPortServer) callbackPeer(context.Context) (unaryCaller, error) {
	return nil, errors.New("a gRPC client exposes no services to call on its connection")
}

func (s grpcPortServer) stop() { s.port.Stop() }
