package healthv1_test

import (
	"testing"

	"github.com/muxrpc/muxrpc/rpc/health/healthv1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The service and its methods go by gRPC's names on the wire, so that
// gRPC's health clients and servers and these interoperate.
func TestNamesAreGRPCs(t *testing.T) {
	if got, want := healthv1.Health_ServiceDesc.ServiceName, "grpc.health.v1.Health"; got != want {
		t.Errorf("service name %q, want %q", got, want)
	}
	for got, want := range map[string]string{
		healthv1.Health_Check_FullMethodName: healthpb.Health_Check_FullMethodName,
		healthv1.Health_List_FullMethodName:  healthpb.Health_List_FullMethodName,
		healthv1.Health_Watch_FullMethodName: healthpb.Health_Watch_FullMethodName,
	} {
		if got != want {
			t.Errorf("method %q, want %q", got, want)
		}
	}
	grpcDesc, desc := healthpb.Health_ServiceDesc, healthv1.Health_ServiceDesc
	if len(desc.Methods) != len(grpcDesc.Methods) || len(desc.Streams) != len(grpcDesc.Streams) {
		t.Fatalf("%d methods and %d streams, gRPC's descriptor has %d and %d",
			len(desc.Methods), len(desc.Streams), len(grpcDesc.Methods), len(grpcDesc.Streams))
	}
	for i, m := range desc.Methods {
		if m.MethodName != grpcDesc.Methods[i].MethodName {
			t.Errorf("method %d %s, gRPC's %s", i, m.MethodName, grpcDesc.Methods[i].MethodName)
		}
	}
	for i, s := range desc.Streams {
		g := grpcDesc.Streams[i]
		if s.StreamName != g.StreamName || s.ServerStreams != g.ServerStreams || s.ClientStreams != g.ClientStreams {
			t.Errorf("stream %+v, gRPC's %+v", s, g)
		}
	}
}
