package interceptors_test

import (
	"reflect"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestServiceInfo(t *testing.T) {
	srv := rpc.NewServer()
	srv.RegisterService(&echoDesc, &echoImpl{})
	var provider reflection.ServiceInfoProvider = interceptors.ServiceInfo(srv)
	want := map[string]grpc.ServiceInfo{"test.Echo": {
		Methods: []grpc.MethodInfo{
			{Name: "Unary"},
			{Name: "Ping"},
			{Name: "ServerStream", IsServerStream: true},
			{Name: "ClientStream", IsClientStream: true},
			{Name: "Bidi", IsClientStream: true, IsServerStream: true},
		},
		Metadata: "test/echo.proto",
	}}
	if got := provider.GetServiceInfo(); !reflect.DeepEqual(got, want) {
		t.Fatalf("GetServiceInfo:\n got %+v\nwant %+v", got, want)
	}
}

const startedHelp = `
# HELP grpc_server_started_total Total number of RPCs started on the server.
# TYPE grpc_server_started_total counter
`

func TestPrometheus(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	metrics := grpcprom.NewServerMetrics()
	reg.MustRegister(metrics)
	srv := rpc.NewServer(
		interceptors.UnaryServer(metrics.UnaryServerInterceptor()),
		interceptors.StreamServer(metrics.StreamServerInterceptor()),
	)
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	metrics.InitializeMetrics(interceptors.ServiceInfo(srv))

	// InitializeMetrics found every method, with its kind: a zero series
	// each, and one per code for the handled counter.
	if n := testutil.CollectAndCount(metrics, "grpc_server_handled_total"); n != 5*17 {
		t.Errorf("%d handled series after InitializeMetrics, want 5 methods x 17 codes", n)
	}
	err := testutil.GatherAndCompare(reg, strings.NewReader(startedHelp+`
grpc_server_started_total{grpc_method="Bidi",grpc_service="test.Echo",grpc_type="bidi_stream"} 0
grpc_server_started_total{grpc_method="ClientStream",grpc_service="test.Echo",grpc_type="client_stream"} 0
grpc_server_started_total{grpc_method="Ping",grpc_service="test.Echo",grpc_type="unary"} 0
grpc_server_started_total{grpc_method="ServerStream",grpc_service="test.Echo",grpc_type="server_stream"} 0
grpc_server_started_total{grpc_method="Unary",grpc_service="test.Echo",grpc_type="unary"} 0
`), "grpc_server_started_total")
	if err != nil {
		t.Error(err)
	}

	client := echoClient{dial(t, serve(t, srv))}
	ctx := testCtx(t)
	for _, v := range []string{"a", "b", "fail"} {
		client.Unary(ctx, wrapperspb.String(v))
	}
	ss, err := client.ServerStream(ctx, wrapperspb.String("s"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(ss); err != nil {
		t.Fatal(err)
	}

	err = testutil.GatherAndCompare(reg, strings.NewReader(startedHelp+`
grpc_server_started_total{grpc_method="Bidi",grpc_service="test.Echo",grpc_type="bidi_stream"} 0
grpc_server_started_total{grpc_method="ClientStream",grpc_service="test.Echo",grpc_type="client_stream"} 0
grpc_server_started_total{grpc_method="Ping",grpc_service="test.Echo",grpc_type="unary"} 0
grpc_server_started_total{grpc_method="ServerStream",grpc_service="test.Echo",grpc_type="server_stream"} 1
grpc_server_started_total{grpc_method="Unary",grpc_service="test.Echo",grpc_type="unary"} 3
`), "grpc_server_started_total")
	if err != nil {
		t.Error(err)
	}
	handled := handledCounts(t, reg)
	want := map[[2]string]float64{
		{"Unary", codes.OK.String()}:                 2,
		{"Unary", codes.FailedPrecondition.String()}: 1,
		{"ServerStream", codes.OK.String()}:          1,
	}
	for k, n := range handled {
		if n != want[k] {
			t.Errorf("grpc_server_handled_total{grpc_method=%q,grpc_code=%q} = %v, want %v", k[0], k[1], n, want[k])
		}
	}
	for k, n := range want {
		if handled[k] != n {
			t.Errorf("grpc_server_handled_total{grpc_method=%q,grpc_code=%q} = %v, want %v", k[0], k[1], handled[k], n)
		}
	}
}

// handledCounts returns the non-zero grpc_server_handled_total series by
// method and code.
func handledCounts(t *testing.T, reg *prometheus.Registry) map[[2]string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if v := m.GetCounter().GetValue(); v != 0 {
				out[[2]string{labels["grpc_method"], labels["grpc_code"]}] = v
			}
		}
	}
	return out
}
