package integration

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// otelSide is the OpenTelemetry of one side of a session: its spans and
// its metrics, and the options of otelgrpc's handlers that record them.
type otelSide struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
}

func newOtelSide(t testing.TB) *otelSide {
	s := &otelSide{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	s.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	t.Cleanup(func() {
		s.tp.Shutdown(context.Background())
		s.mp.Shutdown(context.Background())
	})
	return s
}

// option is otelgrpc's handlers for both roles of a side, recording into
// s: a side of a muxrpc session both calls and serves.
func (s *otelSide) option() rpc.Option {
	opts := []otelgrpc.Option{
		otelgrpc.WithTracerProvider(s.tp),
		otelgrpc.WithMeterProvider(s.mp),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
	}
	return rpc.WithRoleStatsHandlers(otelgrpc.NewClientHandler(opts...), otelgrpc.NewServerHandler(opts...))
}

// span returns the one ended span of kind named name (otelgrpc names a
// span "pkg.Service/Method").
func (s *otelSide) span(t *testing.T, name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for {
		found = found[:0]
		for _, sp := range s.spans.Ended() {
			if sp.Name() == name && sp.SpanKind() == kind {
				found = append(found, sp)
			}
		}
		if len(found) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(found) != 1 {
		t.Fatalf("%d ended %v spans named %s, want 1; all: %v", len(found), kind, name, spanNames(s.spans.Ended()))
	}
	return found[0]
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, sp := range spans {
		names = append(names, sp.SpanKind().String()+" "+sp.Name())
	}
	return names
}

// histogram returns the data points of the histogram named name.
func (s *otelSide) histogram(t *testing.T, name string) []metricdata.HistogramDataPoint[float64] {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			all = append(all, m.Name)
			if m.Name == name {
				h, ok := m.Data.(metricdata.Histogram[float64])
				if !ok {
					t.Fatalf("%s is a %T, not a float64 histogram", name, m.Data)
				}
				return h.DataPoints
			}
		}
	}
	t.Fatalf("no metric %s; got %v", name, all)
	return nil
}

// attrs returns a span's attributes by key.
func attrs(kvs []attribute.KeyValue) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value.Emit()
	}
	return m
}

// otelEcho serves Echo's Unary ("fail" fails with FailedPrecondition)
// and Announce, which calls the caller's Notifier back with the
// handler's context.
type otelEcho struct {
	echov1.UnimplementedEchoServer
}

func (otelEcho) Unary(_ context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	if in.Message == "fail" {
		return nil, status.Error(codes.FailedPrecondition, "asked to fail")
	}
	return &echov1.EchoResponse{Message: in.Message}, nil
}

func (otelEcho) Announce(ctx context.Context, in *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	back := echov1.NewNotifierClient(rpc.PeerFromContext(ctx))
	for _, m := range in.Messages {
		if _, err := back.Notify(ctx, &echov1.Notification{Message: m}); err != nil {
			return nil, err
		}
	}
	return &echov1.AnnounceResponse{Delivered: int32(len(in.Messages))}, nil
}

type otelNotifier struct {
	echov1.UnimplementedNotifierServer
}

func (otelNotifier) Notify(context.Context, *echov1.Notification) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// TestOtelgrpc runs OpenTelemetry's otelgrpc stats handlers on both sides
// of muxrpc sessions, both transports: one span per call on each side,
// the server's the child of the client's through the trace context the
// client handler injects into the call's metadata; a callback the
// server's handler makes is a client span under the server's span, and
// the client serves it under a span of its own, the callback's child;
// and the call durations are recorded on both sides. It asserts the
// attribute and metric names otelgrpc v0.72.0 emits by default (the
// stable RPC conventions, semconv v1.43.0: rpc.system.name, rpc.method
// as "pkg.Service/Method", rpc.response.status_code, and the histograms
// rpc.server.call.duration and rpc.client.call.duration), and with
// OTEL_SEMCONV_STABILITY_OPT_IN=rpc/old the older ones (rpc.system,
// rpc.service, rpc.method as the bare method, rpc.server.duration and
// rpc.client.duration).
func TestOtelgrpc(t *testing.T) {
	for _, mode := range []string{"", "rpc/old"} {
		for _, tr := range []mux.Transport{mux.Native, mux.Smux} {
			name := tr.String()
			if mode != "" {
				name += "/" + mode
			}
			t.Run(name, func(t *testing.T) {
				t.Setenv("OTEL_SEMCONV_STABILITY_OPT_IN", mode) // read as the handlers are made
				testOtelgrpc(t, tr, mode == "rpc/old")
			})
		}
	}
}

func testOtelgrpc(t *testing.T, tr mux.Transport, old bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srvOtel, cliOtel := newOtelSide(t), newOtelSide(t)
	muxCfg := rpc.MuxConfig(&mux.Config{Transport: tr})

	srv := rpc.NewServer(muxCfg, srvOtel.option())
	echov1.RegisterEchoServer(srv, otelEcho{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	defer func() {
		srv.Stop()
		<-served
	}()
	callbacks := rpc.NewServer()
	echov1.RegisterNotifierServer(callbacks, otelNotifier{})
	p, err := rpc.Dial(ctx, ln.Addr().String(), muxCfg, rpc.WithServices(callbacks), cliOtel.option())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	echo := echov1.NewEchoClient(p)

	statusKey, wantOK, wantFailed := attribute.Key("rpc.response.status_code"), "OK", "FAILED_PRECONDITION"
	systemKey, wantSystem := attribute.Key("rpc.system.name"), "grpc"
	serverMetric, clientMetric := "rpc.server.call.duration", "rpc.client.call.duration"
	wantMethod := func(m string) map[attribute.Key]string {
		return map[attribute.Key]string{"rpc.method": "muxrpc.echo.v1." + m}
	}
	if old {
		systemKey = "rpc.system"
		serverMetric, clientMetric = "rpc.server.duration", "rpc.client.duration"
		wantMethod = func(m string) map[attribute.Key]string {
			svc, method, _ := cut(m)
			return map[attribute.Key]string{"rpc.service": "muxrpc.echo.v1." + svc, "rpc.method": method}
		}
	}
	checkAttrs := func(side string, sp sdktrace.ReadOnlySpan, method, code string) {
		t.Helper()
		got := attrs(sp.Attributes())
		want := wantMethod(method)
		want[systemKey], want[statusKey] = wantSystem, code
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s span %s: attribute %s = %q, want %q; all: %v", side, sp.Name(), k, got[k], v, got)
			}
		}
	}

	// A unary call: a client span and its child, the server span.
	if _, err := echo.Unary(ctx, &echov1.EchoRequest{Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	const unary = "muxrpc.echo.v1.Echo/Unary"
	cs, ss := cliOtel.span(t, unary, trace.SpanKindClient), srvOtel.span(t, unary, trace.SpanKindServer)
	if cs.SpanContext().TraceID() != ss.SpanContext().TraceID() || ss.Parent().SpanID() != cs.SpanContext().SpanID() || !ss.Parent().IsRemote() {
		t.Errorf("the server span (trace %v, parent %v) is not the child of the client span (trace %v, span %v)",
			ss.SpanContext().TraceID(), ss.Parent().SpanID(), cs.SpanContext().TraceID(), cs.SpanContext().SpanID())
	}
	checkAttrs("client", cs, "Echo/Unary", wantOK)
	checkAttrs("server", ss, "Echo/Unary", wantOK)
	if n := len(cliOtel.spans.Ended()) + len(srvOtel.spans.Ended()); n != 2 {
		t.Errorf("%d spans for one call, want 2: %v %v", n, spanNames(cliOtel.spans.Ended()), spanNames(srvOtel.spans.Ended()))
	}

	// Announce: the server calls the client's Notifier back inside its
	// handler, with the handler's context.
	if out, err := echo.Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"a"}}); err != nil || out.Delivered != 1 {
		t.Fatalf("Announce: %v, %v", out, err)
	}
	const announce, notify = "muxrpc.echo.v1.Echo/Announce", "muxrpc.echo.v1.Notifier/Notify"
	outer := cliOtel.span(t, announce, trace.SpanKindClient)
	handler := srvOtel.span(t, announce, trace.SpanKindServer)
	back := srvOtel.span(t, notify, trace.SpanKindClient)
	backServed := cliOtel.span(t, notify, trace.SpanKindServer)
	trace0 := outer.SpanContext().TraceID()
	for _, link := range []struct {
		what          string
		child, parent sdktrace.ReadOnlySpan
	}{
		{"the server's Announce span, of the client's", handler, outer},
		{"the server's callback client span, of its Announce span", back, handler},
		{"the client's Notify server span, of the server's callback span", backServed, back},
	} {
		if link.child.SpanContext().TraceID() != trace0 || link.child.Parent().SpanID() != link.parent.SpanContext().SpanID() {
			t.Errorf("%s is not its child: trace %v parent %v, want trace %v parent %v", link.what,
				link.child.SpanContext().TraceID(), link.child.Parent().SpanID(), trace0, link.parent.SpanContext().SpanID())
		}
	}
	checkAttrs("server's callback", back, "Notifier/Notify", wantOK)
	checkAttrs("client's served callback", backServed, "Notifier/Notify", wantOK)

	// A failed call: its status on both sides' spans.
	_, err = echo.Unary(ctx, &echov1.EchoRequest{Message: "fail"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
	var failedC, failedS sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for failedC == nil || failedS == nil {
		if time.Now().After(deadline) {
			t.Fatal("no spans for the failed call")
		}
		for _, sp := range cliOtel.spans.Ended() {
			if sp.Name() == unary && sp.SpanContext().SpanID() != cs.SpanContext().SpanID() {
				failedC = sp
			}
		}
		for _, sp := range srvOtel.spans.Ended() {
			if sp.Name() == unary && sp.SpanContext().SpanID() != ss.SpanContext().SpanID() {
				failedS = sp
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	checkAttrs("client", failedC, "Echo/Unary", wantFailed)
	checkAttrs("server", failedS, "Echo/Unary", wantFailed)
	if failedC.Status().Code.String() != "Error" || failedC.Status().Description != "asked to fail" {
		t.Errorf("the failed call's client span status %+v", failedC.Status())
	}

	// Durations: a data point per method and status on each side, the
	// server's including the callback it made as a client.
	for _, side := range []struct {
		name    string
		o       *otelSide
		metric  string
		methods []string
	}{
		{"server", srvOtel, serverMetric, []string{"Echo/Unary", "Echo/Announce"}},
		{"server", srvOtel, clientMetric, []string{"Notifier/Notify"}},
		{"client", cliOtel, clientMetric, []string{"Echo/Unary", "Echo/Announce"}},
		{"client", cliOtel, serverMetric, []string{"Notifier/Notify"}},
	} {
		points := side.o.histogram(t, side.metric)
		calls := map[string]uint64{}
		for _, pt := range points {
			set := pt.Attributes
			var method string
			if old {
				svc, _ := set.Value("rpc.service")
				m, _ := set.Value("rpc.method")
				method = svc.AsString()[len("muxrpc.echo.v1."):] + "/" + m.AsString()
			} else {
				m, _ := set.Value("rpc.method")
				method = m.AsString()[len("muxrpc.echo.v1."):]
			}
			calls[method] += pt.Count
			if pt.Sum <= 0 {
				t.Errorf("%s %s: %s recorded a duration of %v", side.name, side.metric, method, pt.Sum)
			}
		}
		for _, m := range side.methods {
			want := uint64(1)
			if m == "Echo/Unary" {
				want = 2 // one OK, one failed
			}
			if calls[m] != want {
				t.Errorf("%s %s: %d calls of %s recorded, want %d (all: %v)", side.name, side.metric, calls[m], m, want, calls)
			}
		}
	}
}

// cut splits "Service/Method".
func cut(m string) (string, string, bool) {
	for i := range m {
		if m[i] == '/' {
			return m[:i], m[i+1:], true
		}
	}
	return m, "", false
}

// BenchmarkUnaryOtelgrpc is rpc's BenchmarkUnary with otelgrpc's handlers
// on both sides, recording spans (into a span recorder) and durations:
// what tracing a call with OpenTelemetry costs on muxrpc, both ends
// together.
func BenchmarkUnaryOtelgrpc(b *testing.B) {
	for _, tr := range []mux.Transport{mux.Native, mux.Smux} {
		b.Run(tr.String(), func(b *testing.B) {
			srvOtel, cliOtel := newOtelSide(b), newOtelSide(b)
			muxCfg := rpc.MuxConfig(&mux.Config{Transport: tr})
			srv := rpc.NewServer(muxCfg, srvOtel.option())
			echov1.RegisterEchoServer(srv, otelEcho{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			served := make(chan struct{})
			go func() {
				defer close(served)
				srv.Serve(ln)
			}()
			defer func() {
				srv.Stop()
				<-served
			}()
			ctx := context.Background()
			p, err := rpc.Dial(ctx, ln.Addr().String(), muxCfg, cliOtel.option())
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			echo := echov1.NewEchoClient(p)
			req := &echov1.EchoRequest{Message: string(make([]byte, 62))}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := echo.Unary(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
