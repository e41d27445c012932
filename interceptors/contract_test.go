package interceptors_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The tests in this file check the contract the adapters promise, with
// hand-written grpc interceptors that look at everything they are given.

// checks collects what interceptors and handlers found wrong; they run in
// the server's goroutines, where t.Fatal must not be called.
type checks struct {
	mu   sync.Mutex
	errs []string
}

func (c *checks) errorf(format string, args ...any) {
	c.mu.Lock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *checks) report(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.errs {
		t.Error(e)
	}
}

// contractImpl sets metadata with grpc's functions from its handlers and
// checks what the interceptors put in its contexts.
type contractImpl struct {
	echoImpl
	c *checks
}

type ctxKey struct{}

func (s *contractImpl) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if m, ok := grpc.Method(ctx); !ok || m != "/test.Echo/Unary" {
		s.c.errorf("handler: grpc.Method = %q, %v", m, ok)
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs("handler-header", "h")); err != nil {
		s.c.errorf("handler: grpc.SetHeader: %v", err)
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs("handler-trailer", "t")); err != nil {
		s.c.errorf("handler: grpc.SetTrailer: %v", err)
	}
	if v, _ := ctx.Value(ctxKey{}).(string); v != "from interceptor" {
		s.c.errorf("handler: the interceptor's context did not arrive: %q", v)
	}
	return s.echoImpl.Unary(ctx, in)
}

func (s *contractImpl) Ping(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if err := grpc.SendHeader(ctx, metadata.Pairs("sent", "early")); err != nil {
		s.c.errorf("handler: grpc.SendHeader: %v", err)
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs("too", "late")); status.Code(err) != codes.Internal {
		s.c.errorf("handler: grpc.SetHeader after SendHeader: %v, want Internal", err)
	}
	return s.echoImpl.Ping(ctx, in)
}

// checkStream checks what the stream interceptor put in a stream's
// context, and sets metadata with grpc's functions.
func (s *contractImpl) checkStream(ss rpc.ServerStream, method string) {
	ctx := ss.Context()
	if m, ok := grpc.Method(ctx); !ok || m != method {
		s.c.errorf("%s handler: grpc.Method = %q, %v", method, m, ok)
	}
	if v, _ := ctx.Value(ctxKey{}).(string); v != "wrapped" {
		s.c.errorf("%s handler: the interceptor's wrapped stream did not arrive: %q", method, v)
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs("handler-header", "h")); err != nil {
		s.c.errorf("%s handler: grpc.SetHeader: %v", method, err)
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs("handler-trailer", "t")); err != nil {
		s.c.errorf("%s handler: grpc.SetTrailer: %v", method, err)
	}
}

func (s *contractImpl) ServerStream(in *wrapperspb.StringValue, ss rpc.ServerStreamingServer[wrapperspb.StringValue]) error {
	s.checkStream(ss, "/test.Echo/ServerStream")
	return s.echoImpl.ServerStream(in, ss)
}

func (s *contractImpl) ClientStream(ss rpc.ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	s.checkStream(ss, "/test.Echo/ClientStream")
	return s.echoImpl.ClientStream(ss)
}

func (s *contractImpl) Bidi(ss rpc.BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	s.checkStream(ss, "/test.Echo/Bidi")
	return s.echoImpl.Bidi(ss)
}

// checkCallContext checks what every serving context must carry.
func checkCallContext(c *checks, ctx context.Context, method string) {
	if p, ok := peer.FromContext(ctx); !ok || p.Addr == nil {
		c.errorf("%s: no peer address in the context", method)
	}
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("client-key")) != 1 || md.Get("client-key")[0] != "v" {
		c.errorf("%s: incoming metadata %v lacks the client's key", method, md)
	}
	if _, ok := ctx.Deadline(); !ok {
		c.errorf("%s: the caller's deadline is not in the context", method)
	}
	if m, ok := grpc.Method(ctx); !ok || m != method {
		c.errorf("%s: grpc.Method in the interceptor = %q, %v", method, m, ok)
	}
}

func TestServerContract(t *testing.T) {
	c := &checks{}
	impl := &contractImpl{echoImpl: echoImpl{name: "server"}, c: c}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if info == nil {
			c.errorf("nil UnaryServerInfo")
			return handler(ctx, req)
		}
		if info.Server != impl {
			c.errorf("%s: info.Server = %T, want the implementation", info.FullMethod, info.Server)
		}
		if _, ok := req.(*wrapperspb.StringValue); !ok {
			c.errorf("%s: request of type %T", info.FullMethod, req)
		}
		checkCallContext(c, ctx, info.FullMethod)
		if info.FullMethod == "/test.Echo/Unary" {
			if err := grpc.SetHeader(ctx, metadata.Pairs("interceptor-header", "h")); err != nil {
				c.errorf("interceptor: grpc.SetHeader: %v", err)
			}
		}
		resp, err := handler(context.WithValue(ctx, ctxKey{}, "from interceptor"), req)
		if err != nil {
			if _, ok := err.(interface{ GRPCStatus() *status.Status }); !ok {
				c.errorf("%s: handler error %v (%T) carries no status", info.FullMethod, err, err)
			}
			return nil, err
		}
		if info.FullMethod == "/test.Echo/Unary" {
			grpc.SetTrailer(ctx, metadata.Pairs("interceptor-trailer", "t"))
		}
		return resp, err
	}
	type kind struct{ client, server bool }
	kinds := map[string]kind{
		"/test.Echo/ServerStream": {false, true},
		"/test.Echo/ClientStream": {true, false},
		"/test.Echo/Bidi":         {true, true},
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info == nil {
			c.errorf("nil StreamServerInfo")
			return handler(srv, ss)
		}
		if srv != impl {
			c.errorf("%s: srv = %T, want the implementation", info.FullMethod, srv)
		}
		if k, ok := kinds[info.FullMethod]; !ok || k.client != info.IsClientStream || k.server != info.IsServerStream {
			c.errorf("%s: IsClientStream %v, IsServerStream %v", info.FullMethod, info.IsClientStream, info.IsServerStream)
		}
		checkCallContext(c, ss.Context(), info.FullMethod)
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = context.WithValue(ss.Context(), ctxKey{}, "wrapped")
		return handler(srv, w)
	}
	client, _ := echoServe(t, impl, []rpc.ServerOption{interceptors.UnaryServer(unary), interceptors.StreamServer(stream)})
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "client-key", "v")

	var header, trailer metadata.MD
	out, err := client.Unary(ctx, wrapperspb.String("hi"), rpc.Header(&header), rpc.Trailer(&trailer))
	if err != nil || out.Value != "server:hi" {
		t.Fatalf("Unary: %v, %v", out, err)
	}
	for _, k := range []string{"interceptor-header", "handler-header"} {
		if len(header.Get(k)) != 1 {
			t.Errorf("header %v lacks %s", header, k)
		}
	}
	for _, k := range []string{"interceptor-trailer", "handler-trailer"} {
		if len(trailer.Get(k)) != 1 {
			t.Errorf("trailer %v lacks %s", trailer, k)
		}
	}
	_, err = client.Unary(ctx, wrapperspb.String("fail"))
	wantCode(t, err, codes.FailedPrecondition)

	header = nil
	if _, err := client.Ping(ctx, wrapperspb.String("x"), rpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if got := header.Get("sent"); len(got) != 1 || len(header.Get("too")) != 0 {
		t.Errorf("header after grpc.SendHeader: %v", header)
	}

	// Streams of each kind.
	ss, err := client.ServerStream(ctx, wrapperspb.String("s"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := recvAll(ss); err != nil || len(got) != 3 {
		t.Fatalf("ServerStream: %v, %v", got, err)
	}
	checkStreamMetadata(t, ss)

	cs, err := client.ClientStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"a", "b"} {
		if err := cs.Send(wrapperspb.String(v)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := cs.CloseAndRecv(); err != nil || out.Value != "server:a,b" {
		t.Fatalf("ClientStream: %v, %v", out, err)
	}
	checkStreamMetadata(t, cs)

	bs, err := client.Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Send(wrapperspb.String("x")); err != nil {
		t.Fatal(err)
	}
	if out, err := bs.Recv(); err != nil || out.Value != "server:x" {
		t.Fatalf("Bidi: %v, %v", out, err)
	}
	bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		t.Fatalf("Bidi end: %v", err)
	}
	checkStreamMetadata(t, bs)
	c.report(t)
}

func checkStreamMetadata(t *testing.T, cs rpc.ClientStream) {
	t.Helper()
	header, err := cs.Header()
	if err != nil || len(header.Get("handler-header")) != 1 {
		t.Errorf("stream header %v, %v: lacks what grpc.SetHeader set", header, err)
	}
	if tr := cs.Trailer(); len(tr.Get("handler-trailer")) != 1 {
		t.Errorf("stream trailer %v: lacks what grpc.SetTrailer set", tr)
	}
}

// marker is a grpc.CallOption of the test's own, as interceptor packages
// define theirs (retry.CallOption, for one).
type marker struct {
	grpc.EmptyCallOption
	name string
}

// wantMarker checks that opts holds the marker and nothing but grpc call
// options.
func wantMarker(c *checks, method string, opts []grpc.CallOption) {
	if !slices.ContainsFunc(opts, func(o grpc.CallOption) bool { m, ok := o.(marker); return ok && m.name == "m" }) {
		c.errorf("%s: the caller's grpc call option did not arrive: %v", method, opts)
	}
}

// countingStream counts the messages a client receives.
type countingStream struct {
	grpc.ClientStream
	mu sync.Mutex
	n  int
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.mu.Lock()
		s.n++
		s.mu.Unlock()
	}
	return err
}

func TestClientContract(t *testing.T) {
	c := &checks{}
	// The server sets metadata with grpc's functions: UnaryServer with no
	// interceptors installs the transport stream that needs.
	impl := &contractImpl{echoImpl: echoImpl{name: "server"}, c: &checks{}}
	var interceptorHeader metadata.MD
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if cc != nil {
			c.errorf("%s: non-nil ClientConn", method)
		}
		if _, ok := req.(*wrapperspb.StringValue); !ok {
			c.errorf("%s: request of type %T", method, req)
		}
		wantMarker(c, method, opts)
		// An interceptor that reads the response header, as some do.
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&interceptorHeader))...)
		if err != nil {
			if _, ok := err.(interface{ GRPCStatus() *status.Status }); !ok {
				c.errorf("%s: error %v (%T) carries no status", method, err, err)
			}
		}
		return err
	}
	streams := map[string]*countingStream{}
	var mu sync.Mutex
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if cc != nil {
			c.errorf("%s: non-nil ClientConn", method)
		}
		if desc == nil || "/test.Echo/"+desc.StreamName != method || desc.Handler == nil {
			c.errorf("%s: desc %+v", method, desc)
		} else if want := map[string][2]bool{"ServerStream": {false, true}, "ClientStream": {true, false}, "Bidi": {true, true}}[desc.StreamName]; want != [2]bool{desc.ClientStreams, desc.ServerStreams} {
			c.errorf("%s: ClientStreams %v, ServerStreams %v", method, desc.ClientStreams, desc.ServerStreams)
		}
		wantMarker(c, method, opts)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		w := &countingStream{ClientStream: cs}
		mu.Lock()
		streams[method] = w
		mu.Unlock()
		return w, nil
	}
	client, _ := echoServe(t, impl, []rpc.ServerOption{interceptors.UnaryServer(), interceptors.StreamServer()},
		interceptors.UnaryClient(unary), interceptors.StreamClient(stream))
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "client-key", "v")
	m := marker{name: "m"}

	// Every grpc.Header option gets the header, the caller's and the one
	// the interceptor adds; the caller's rpc.Trailer gets the trailer.
	var callerHeader, rpcTrailer metadata.MD
	out, err := client.Unary(ctx, wrapperspb.String("hi"), m, grpc.Header(&callerHeader), rpc.Trailer(&rpcTrailer))
	if err != nil || out.Value != "server:hi" {
		t.Fatalf("Unary: %v, %v", out, err)
	}
	if len(callerHeader.Get("handler-header")) != 1 {
		t.Errorf("grpc.Header passed by the caller: %v", callerHeader)
	}
	if len(interceptorHeader.Get("handler-header")) != 1 {
		t.Errorf("grpc.Header added by an interceptor: %v", interceptorHeader)
	}
	if len(rpcTrailer.Get("handler-trailer")) != 1 {
		t.Errorf("rpc.Trailer through the interceptors: %v", rpcTrailer)
	}
	// The caller's own rpc.Header takes the header: the rpc package fills
	// one destination.
	var rpcHeader, grpcTrailer metadata.MD
	interceptorHeader = nil
	if _, err := client.Unary(ctx, wrapperspb.String("hi"), m, rpc.Header(&rpcHeader), grpc.Trailer(&grpcTrailer)); err != nil {
		t.Fatal(err)
	}
	if len(rpcHeader.Get("handler-header")) != 1 {
		t.Errorf("rpc.Header through the interceptors: %v", rpcHeader)
	}
	if len(grpcTrailer.Get("handler-trailer")) != 1 {
		t.Errorf("grpc.Trailer passed by the caller: %v", grpcTrailer)
	}
	_, err = client.Unary(ctx, wrapperspb.String("fail"), m)
	wantCode(t, err, codes.FailedPrecondition)
	// A grpc message size limit takes effect on the call.
	_, err = client.Unary(ctx, wrapperspb.String("a long enough request"), m, grpc.MaxCallRecvMsgSize(8))
	wantCode(t, err, codes.ResourceExhausted)

	// The stream the interceptor returns is the caller's.
	ss, err := client.ServerStream(ctx, wrapperspb.String("s"), m)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ss.(*stringClientStream).ClientStream.(*countingStream); !ok {
		t.Errorf("the caller's stream is a %T, not the interceptor's", ss.(*stringClientStream).ClientStream)
	}
	if got, err := recvAll(ss); err != nil || len(got) != 3 {
		t.Fatalf("ServerStream: %v, %v", got, err)
	}
	cs, err := client.ClientStream(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	cs.Send(wrapperspb.String("a"))
	if out, err := cs.CloseAndRecv(); err != nil || out.Value != "server:a" {
		t.Fatalf("ClientStream: %v, %v", out, err)
	}
	bs, err := client.Bidi(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	bs.Send(wrapperspb.String("b"))
	if out, err := bs.Recv(); err != nil || out.Value != "server:b" {
		t.Fatalf("Bidi: %v, %v", out, err)
	}
	bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		t.Fatalf("Bidi end: %v", err)
	}
	mu.Lock()
	for method, want := range map[string]int{"/test.Echo/ServerStream": 3, "/test.Echo/ClientStream": 1, "/test.Echo/Bidi": 1} {
		if s := streams[method]; s == nil || s.n != want {
			t.Errorf("%s: the interceptor's stream saw %v messages, want %d", method, s, want)
		}
	}
	mu.Unlock()
	c.report(t)
}

// TestChainOrder checks that interceptors run in the order given, across
// options and among the rpc package's own interceptors.
func TestChainOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	note := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	srvI := func(name string) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			note(name)
			return handler(ctx, req)
		}
	}
	cliI := func(name string) grpc.UnaryClientInterceptor {
		return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			note(name)
			return invoker(ctx, method, req, reply, cc, opts...)
		}
	}
	native := rpc.ChainUnaryServer(func(ctx context.Context, req any, info *rpc.UnaryServerInfo, handler rpc.UnaryHandler) (any, error) {
		note("s-native")
		return handler(ctx, req)
	})
	nativeClient := rpc.ChainUnaryClient(func(ctx context.Context, method string, req, reply any, cc rpc.ClientConnInterface, invoker rpc.UnaryInvoker, opts ...rpc.CallOption) error {
		note("c-native")
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	client, _ := echoServe(t, nil,
		[]rpc.ServerOption{interceptors.UnaryServer(srvI("s1"), srvI("s2")), native, interceptors.UnaryServer(srvI("s3"))},
		interceptors.UnaryClient(cliI("c1"), cliI("c2")), nativeClient, interceptors.UnaryClient(cliI("c3")))
	if _, err := client.Unary(testCtx(t), wrapperspb.String("x")); err != nil {
		t.Fatal(err)
	}
	want := []string{"c1", "c2", "c-native", "c3", "s1", "s2", "s-native", "s3"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
}
