// This test goes into the package of proto3.proto, beside protoc-gen-go's
// proto3.pb.go, protoc-gen-go-grpc's proto3_grpc.pb.go and our
// proto3_muxrpc.pb.go with grpc_coexist=true (see
// TestGRPCCoexistBesideGRPC): that it compiles shows that the two
// plugins' code sits in one package, and it checks that both call the
// same methods.
package proto3pb

import (
	"context"
	"errors"
	"testing"

	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
)

// Both plugins' code of service Echo, side by side.
var (
	_ func(grpc.ClientConnInterface) EchoClient   = NewEchoClient
	_ func(rpc.ClientConnInterface) MuxEchoClient = NewMuxEchoClient
	_ func(grpc.ServiceRegistrar, EchoServer)     = RegisterEchoServer
	_ func(rpc.ServiceRegistrar, MuxEchoServer)   = RegisterMuxEchoServer
	_ EchoServer                                  = UnimplementedEchoServer{}
	_ MuxEchoServer                               = UnimplementedMuxEchoServer{}
	_ grpc.ServerStreamingClient[Response]        = Echo_ServerStreamClient(nil)
	_ rpc.ServerStreamingClient[Response]         = MuxEcho_ServerStreamClient(nil)
	_ grpc.BidiStreamingServer[Request, Response] = Echo_BidiServer(nil)
	_ rpc.BidiStreamingServer[Request, Response]  = MuxEcho_BidiServer(nil)
)

var errRecorded = errors.New("recorded")

// grpcConn records the calls of grpc's client.
type grpcConn struct{ method, stream string }

func (c *grpcConn) Invoke(_ context.Context, method string, _, _ any, _ ...grpc.CallOption) error {
	c.method = method
	return nil
}

func (c *grpcConn) NewStream(_ context.Context, desc *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	c.method, c.stream = method, desc.StreamName
	return nil, errRecorded
}

// muxConn records the calls of muxrpc's client.
type muxConn struct{ method, stream string }

func (c *muxConn) Invoke(_ context.Context, method string, _, _ any, _ ...rpc.CallOption) error {
	c.method = method
	return nil
}

func (c *muxConn) NewStream(_ context.Context, desc *rpc.StreamDesc, method string, _ ...rpc.CallOption) (rpc.ClientStream, error) {
	c.method, c.stream = method, desc.StreamName
	return nil, errRecorded
}

func TestBothClients(t *testing.T) {
	ctx := context.Background()
	g, m := new(grpcConn), new(muxConn)
	grpcClient, muxClient := NewEchoClient(g), NewMuxEchoClient(m)

	if _, err := grpcClient.Unary(ctx, &Request{}); err != nil {
		t.Fatal(err)
	}
	if _, err := muxClient.Unary(ctx, &Request{}); err != nil {
		t.Fatal(err)
	}
	if g.method != "/muxrpc.test.proto3.Echo/Unary" || m.method != g.method {
		t.Errorf("Unary: grpc's client calls %q, muxrpc's %q", g.method, m.method)
	}

	if _, err := grpcClient.Bidi(ctx); !errors.Is(err, errRecorded) {
		t.Fatal(err)
	}
	if _, err := muxClient.Bidi(ctx); !errors.Is(err, errRecorded) {
		t.Fatal(err)
	}
	if g.method != "/muxrpc.test.proto3.Echo/Bidi" || g.stream != "Bidi" || m.method != g.method || m.stream != g.stream {
		t.Errorf("Bidi: grpc's client opens %+v, muxrpc's %+v", *g, *m)
	}
}

func TestSameNames(t *testing.T) {
	for _, names := range [][2]string{
		{Echo_Unary_FullMethodName, MuxEcho_Unary_FullMethodName},
		{Echo_ServerStream_FullMethodName, MuxEcho_ServerStream_FullMethodName},
		{Echo_ClientStream_FullMethodName, MuxEcho_ClientStream_FullMethodName},
		{Echo_Bidi_FullMethodName, MuxEcho_Bidi_FullMethodName},
		{Legacy_Call_FullMethodName, MuxLegacy_Call_FullMethodName},
		{Echo_ServiceDesc.ServiceName, MuxEcho_ServiceDesc.ServiceName},
		{Legacy_ServiceDesc.ServiceName, MuxLegacy_ServiceDesc.ServiceName},
	} {
		if names[0] != names[1] {
			t.Errorf("grpc's %q, muxrpc's %q", names[0], names[1])
		}
	}
	g, m := Echo_ServiceDesc, MuxEcho_ServiceDesc
	if len(g.Methods) != len(m.Methods) || len(g.Streams) != len(m.Streams) {
		t.Fatalf("grpc's %d methods and %d streams, muxrpc's %d and %d", len(g.Methods), len(g.Streams), len(m.Methods), len(m.Streams))
	}
	for i := range g.Methods {
		if g.Methods[i].MethodName != m.Methods[i].MethodName {
			t.Errorf("method %d: grpc's %q, muxrpc's %q", i, g.Methods[i].MethodName, m.Methods[i].MethodName)
		}
	}
	for i := range g.Streams {
		gs, ms := g.Streams[i], m.Streams[i]
		if gs.StreamName != ms.StreamName || gs.ServerStreams != ms.ServerStreams || gs.ClientStreams != ms.ClientStreams {
			t.Errorf("stream %d: grpc's %+v, muxrpc's %+v", i, gs, ms)
		}
	}
	if g.Metadata != m.Metadata {
		t.Errorf("metadata: grpc's %v, muxrpc's %v", g.Metadata, m.Metadata)
	}
}
