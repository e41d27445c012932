// This test goes into the package of coexist.proto, beside protoc-gen-go's,
// protoc-gen-go-grpc's and our code with grpc_coexist=true (see
// TestGRPCCoexistBesideGRPC): that it compiles shows that names which clash
// only with the Mux prefix, or with protoc-gen-go-grpc's code of a service
// MuxFoo, get a trailing underscore.
package coexistpb

import (
	"testing"

	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
)

var (
	// Ping: the message MuxPingClient and the nested message
	// MuxPing.ServiceDesc have two of our names.
	_ *MuxPingClient                                  = new(MuxPingClient)
	_ *MuxPing_ServiceDesc                            = new(MuxPing_ServiceDesc)
	_ func(grpc.ClientConnInterface) PingClient       = NewPingClient
	_ func(grpc.ServiceRegistrar, PingServer)         = RegisterPingServer
	_ grpc.ServerStreamingClient[MuxPing_ServiceDesc] = Ping_WatchClient(nil)
	_ grpc.ServerStreamingServer[MuxPing_ServiceDesc] = Ping_WatchServer(nil)
	_ func(rpc.ClientConnInterface) MuxPingClient_    = NewMuxPingClient
	_ func(rpc.ServiceRegistrar, MuxPingServer)       = RegisterMuxPingServer
	_ rpc.ServerStreamingClient[MuxPing_ServiceDesc]  = MuxPing_WatchClient(nil)
	_ rpc.ServerStreamingServer[MuxPing_ServiceDesc]  = MuxPing_WatchServer(nil)

	// Foo: protoc-gen-go-grpc's code of MuxFoo has all of our names.
	_ func(grpc.ClientConnInterface) FooClient    = NewFooClient
	_ func(grpc.ServiceRegistrar, FooServer)      = RegisterFooServer
	_ func(rpc.ClientConnInterface) MuxFooClient_ = NewMuxFooClient_
	_ func(rpc.ServiceRegistrar, MuxFooServer_)   = RegisterMuxFooServer_
	_ MuxFooServer_                               = UnimplementedMuxFooServer_{}
	_ rpc.BidiStreamingClient[MuxPing, MuxPing]   = MuxFoo_BazClient_(nil)
	_ rpc.BidiStreamingServer[MuxPing, MuxPing]   = MuxFoo_BazServer_(nil)

	// MuxFoo: grpc's names are Mux-prefixed already, ours twice.
	_ func(grpc.ClientConnInterface) MuxFooClient   = NewMuxFooClient
	_ func(grpc.ServiceRegistrar, MuxFooServer)     = RegisterMuxFooServer
	_ grpc.BidiStreamingClient[MuxPing, MuxPing]    = MuxFoo_BazClient(nil)
	_ func(rpc.ClientConnInterface) MuxMuxFooClient = NewMuxMuxFooClient
	_ func(rpc.ServiceRegistrar, MuxMuxFooServer)   = RegisterMuxMuxFooServer
	_ MuxMuxFooServer                               = UnimplementedMuxMuxFooServer{}
	_ rpc.BidiStreamingClient[MuxPing, MuxPing]     = MuxMuxFoo_BazClient(nil)
)

func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Ping_ServiceDesc.ServiceName, "muxrpc.test.coexist.Ping"},
		{MuxPing_ServiceDesc_.ServiceName, "muxrpc.test.coexist.Ping"},
		{Foo_ServiceDesc.ServiceName, "muxrpc.test.coexist.Foo"},
		{MuxFoo_ServiceDesc_.ServiceName, "muxrpc.test.coexist.Foo"},
		{MuxFoo_ServiceDesc.ServiceName, "muxrpc.test.coexist.MuxFoo"},
		{MuxMuxFoo_ServiceDesc.ServiceName, "muxrpc.test.coexist.MuxFoo"},
		{Ping_Watch_FullMethodName, "/muxrpc.test.coexist.Ping/Watch"},
		{MuxPing_Watch_FullMethodName, "/muxrpc.test.coexist.Ping/Watch"},
		{Foo_Bar_FullMethodName, "/muxrpc.test.coexist.Foo/Bar"},
		{MuxFoo_Bar_FullMethodName_, "/muxrpc.test.coexist.Foo/Bar"},
		{MuxFoo_Bar_FullMethodName, "/muxrpc.test.coexist.MuxFoo/Bar"},
		{MuxMuxFoo_Bar_FullMethodName, "/muxrpc.test.coexist.MuxFoo/Bar"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}
