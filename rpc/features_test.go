package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestStatusDetails returns statuses with details from unary and
// streaming handlers: code, message and every detail reach the caller.
func TestStatusDetails(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		want := []proto.Message{wrapperspb.String("why"), durationpb.New(3 * time.Second)}
		failing := func() error {
			s, err := status.New(codes.FailedPrecondition, "not now").WithDetails(wrapperspb.String("why"), durationpb.New(3*time.Second))
			if err != nil {
				return err
			}
			return s.Err()
		}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{
			unary: func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				return nil, failing()
			},
			bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
				if err := s.Send(wrapperspb.String("first")); err != nil {
					return err
				}
				return failing()
			},
		})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		check := func(err error) {
			t.Helper()
			wantStatus(t, err, codes.FailedPrecondition, "not now")
			got := status.Convert(err).Details()
			if len(got) != len(want) {
				t.Fatalf("got %d details %v, want %d", len(got), got, len(want))
			}
			for i := range want {
				m, ok := got[i].(proto.Message)
				if !ok || !proto.Equal(m, want[i]) {
					t.Fatalf("detail %d: got %v, want %v", i, got[i], want[i])
				}
			}
		}
		_, err := c.Unary(ctx, wrapperspb.String("x"))
		check(err)
		s, err := c.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := s.Recv(); err != nil || m.Value != "first" {
			t.Fatalf("got %v, %v", m, err)
		}
		_, err = s.Recv()
		check(err)
	})
}

// TestMetadata sends metadata both ways: the caller's outgoing metadata
// reaches the handler's incoming context, and the handler's header and
// trailer (SetHeader, SendHeader, SetTrailer) reach the caller through the
// Header and Trailer call options for unary calls and Header and Trailer
// of streams, also when the call fails; and the same from server to
// client.
func TestMetadata(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		// The handlers answer with the incoming metadata's "k" values.
		incoming := func(ctx context.Context) string {
			md, _ := metadata.FromIncomingContext(ctx)
			return strings.Join(md.Get("k"), ",")
		}
		impl := &funcEcho{
			unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				if err := SetHeader(ctx, metadata.Pairs("h1", "a")); err != nil {
					return nil, err
				}
				if in.Value == "send header" {
					if err := SendHeader(ctx, metadata.Pairs("h2", "b")); err != nil {
						return nil, err
					}
					if err := SetHeader(ctx, metadata.Pairs("late", "x")); err == nil {
						return nil, errors.New("SetHeader after SendHeader succeeded")
					}
				}
				if err := SetTrailer(ctx, metadata.Pairs("t1", "c")); err != nil {
					return nil, err
				}
				if m, ok := Method(ctx); !ok || m != "/test.Echo/Unary" {
					return nil, status.Errorf(codes.Internal, "Method: %q %v", m, ok)
				}
				if in.Value == "fail" {
					return nil, status.Error(codes.Aborted, "failed with metadata")
				}
				return wrapperspb.String(incoming(ctx)), nil
			},
			serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				if err := s.SetHeader(metadata.Pairs("h1", "a")); err != nil {
					return err
				}
				if in.Value == "send header" {
					if err := s.SendHeader(metadata.Pairs("h2", "b")); err != nil {
						return err
					}
				}
				s.SetTrailer(metadata.Pairs("t1", "c"))
				if in.Value == "fail" {
					return status.Error(codes.Aborted, "failed with metadata")
				}
				return s.Send(wrapperspb.String(incoming(s.Context())))
			},
		}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, impl)
		client := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		ctx = metadata.AppendToOutgoingContext(ctx, "k", "v1", "k", "v2")

		wantMD := func(what string, got metadata.MD, want ...string) {
			t.Helper()
			if !reflect.DeepEqual(got, metadata.Pairs(want...)) {
				t.Errorf("%s: got %v, want %v", what, got, metadata.Pairs(want...))
			}
		}
		for _, dir := range []struct {
			name string
			cc   *Peer
		}{{"clientToServer", client}, {"serverToClient", onlyPeer(t, srv)}} {
			t.Run(dir.name, func(t *testing.T) {
				c := echoClient{dir.cc}
				for _, req := range []string{"set header", "send header", "fail"} {
					var header, trailer metadata.MD
					out, err := c.Unary(ctx, wrapperspb.String(req), Header(&header), Trailer(&trailer))
					wantHeader := []string{"h1", "a"}
					if req == "send header" {
						wantHeader = append(wantHeader, "h2", "b")
					}
					if req == "fail" {
						wantStatus(t, err, codes.Aborted, "failed with metadata")
					} else if err != nil || out.Value != "v1,v2" {
						t.Fatalf("unary %q: got %v, %v; want the incoming metadata v1,v2", req, out, err)
					}
					wantMD("unary "+req+" header", header, wantHeader...)
					wantMD("unary "+req+" trailer", trailer, "t1", "c")

					s, err := c.ServerStream(ctx, wrapperspb.String(req))
					if err != nil {
						t.Fatal(err)
					}
					h, err := s.Header()
					if err != nil {
						t.Fatal(err)
					}
					wantMD("stream "+req+" header", h, wantHeader...)
					m, err := s.Recv()
					if req == "fail" {
						wantStatus(t, err, codes.Aborted, "failed with metadata")
					} else {
						if err != nil || m.Value != "v1,v2" {
							t.Fatalf("stream %q: got %v, %v", req, m, err)
						}
						if _, err := s.Recv(); !errors.Is(err, io.EOF) {
							t.Fatalf("got %v, want io.EOF", err)
						}
					}
					wantMD("stream "+req+" trailer", s.Trailer(), "t1", "c")
				}
			})
		}
	})
}

// TestPeerInfo checks what a handler learns of its caller: peer.FromContext
// gives the caller's address (and no AuthInfo without TLS), and
// PeerFromContext the Peer to call back through, on both sides.
func TestPeerInfo(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		type seen struct {
			addr, local string
			auth        credentials.AuthInfo
			back        *Peer
		}
		seenc := make(chan seen, 2)
		impl := &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			p, ok := peer.FromContext(ctx)
			if !ok || p.Addr == nil || p.LocalAddr == nil {
				return nil, status.Errorf(codes.Internal, "peer.FromContext: %v, %v", p, ok)
			}
			seenc <- seen{p.Addr.String(), p.LocalAddr.String(), p.AuthInfo, PeerFromContext(ctx)}
			return in, nil
		}}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, impl)
		client := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		server := onlyPeer(t, srv)
		clientAddr, serverAddr := client.Session().LocalAddr().String(), client.RemoteAddr().String()

		if _, err := (echoClient{client}).Unary(ctx, wrapperspb.String("x")); err != nil {
			t.Fatal(err)
		}
		s := <-seenc
		if s.addr != clientAddr || s.local != serverAddr || s.auth != nil || s.back != server {
			t.Errorf("the server's handler saw %+v; want caller %s, local %s, no AuthInfo, the server's Peer", s, clientAddr, serverAddr)
		}
		if _, err := (echoClient{server}).Unary(ctx, wrapperspb.String("x")); err != nil {
			t.Fatal(err)
		}
		s = <-seenc
		if s.addr != serverAddr || s.local != clientAddr || s.auth != nil || s.back != client {
			t.Errorf("the client's handler saw %+v; want caller %s, local %s, no AuthInfo, the client's Peer", s, serverAddr, clientAddr)
		}
		if PeerFromContext(ctx) != nil {
			t.Errorf("PeerFromContext outside a handler is not nil")
		}
	})
}

// TestHandlerPanic panics in unary and streaming handlers: the caller gets
// Internal naming the method, not the panic value, and the server goes
// on serving. (TestHandlerPanicLogged checks the log; this Server's
// discards it.)
func TestHandlerPanic(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(muxOpt(tr), WithLogger(slog.New(slog.DiscardHandler)))
		srv.RegisterService(&echoDesc, &funcEcho{
			unary: defaultEcho.Unary, // panics on "panic"
			bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
				if _, err := s.Recv(); err != nil {
					return err
				}
				s.Send(wrapperspb.String("before the panic"))
				var m map[string]int
				m["boom"]++ // a runtime panic
				return nil
			},
		})
		p := dial(t, serve(t, srv), muxOpt(tr))
		c := echoClient{p}
		for range 3 {
			_, err := c.Unary(ctx, wrapperspb.String("panic"))
			wantStatus(t, err, codes.Internal, "rpc: handler for /test.Echo/Unary panicked")
			if strings.Contains(err.Error(), "asked to") {
				t.Fatalf("the status leaks the panic value: %v", err)
			}
			checkEcho(t, ctx, p, "server")
		}
		s, err := c.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Send(wrapperspb.String("go"))
		if m, err := s.Recv(); err != nil || m.Value != "before the panic" {
			t.Fatalf("got %v, %v", m, err)
		}
		_, err = s.Recv()
		wantStatus(t, err, codes.Internal, "rpc: handler for /test.Echo/Bidi panicked")
		if strings.Contains(err.Error(), "nil map") {
			t.Fatalf("the status leaks the panic value: %v", err)
		}
		checkEcho(t, ctx, p, "server")
	})
}

// TestInterceptorOrder installs interceptor chains (in two options each,
// to check that options add up) on both sides for unary and streaming
// calls: they run outermost first, see the full method name and stream
// kind, a wrapped ServerStream reaches the handler, and call options the
// package does not know reach client interceptors unchanged.
func TestInterceptorOrder(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		var mu sync.Mutex
		var trace []string
		record := func(s string) {
			mu.Lock()
			trace = append(trace, s)
			mu.Unlock()
		}
		take := func() []string {
			mu.Lock()
			defer mu.Unlock()
			got := trace
			trace = nil
			return got
		}
		type marker struct{ v string }
		unaryServer := func(name string) UnaryServerInterceptor {
			return func(ctx context.Context, req any, info *UnaryServerInfo, h UnaryHandler) (any, error) {
				record(name + ">" + info.FullMethod)
				resp, err := h(ctx, req)
				record("<" + name)
				return resp, err
			}
		}
		streamServer := func(name string) StreamServerInterceptor {
			return func(srv any, ss ServerStream, info *StreamServerInfo, h StreamHandler) error {
				record(name + ">" + info.FullMethod)
				if !info.IsClientStream || !info.IsServerStream {
					record("wrong kind")
				}
				err := h(srv, &countingStream{ServerStream: ss, name: name, record: record})
				record("<" + name)
				return err
			}
		}
		unaryClient := func(name string) UnaryClientInterceptor {
			return func(ctx context.Context, method string, req, reply any, cc ClientConnInterface, inv UnaryInvoker, opts ...CallOption) error {
				record(name + ">" + method)
				if !slices.Contains(opts, CallOption(marker{"m"})) {
					record("marker lost")
				}
				err := inv(ctx, method, req, reply, cc, opts...)
				record("<" + name)
				return err
			}
		}
		streamClient := func(name string) StreamClientInterceptor {
			return func(ctx context.Context, desc *StreamDesc, cc ClientConnInterface, method string, s Streamer, opts ...CallOption) (ClientStream, error) {
				record(name + ">" + method)
				cs, err := s(ctx, desc, cc, method, opts...)
				record("<" + name)
				return cs, err
			}
		}
		srv := NewServer(muxOpt(tr),
			ChainUnaryServer(unaryServer("s1"), unaryServer("s2")), ChainUnaryServer(unaryServer("s3")),
			ChainStreamServer(streamServer("ss1")), ChainStreamServer(streamServer("ss2")))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			record("handler")
			return in, nil
		}})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr),
			ChainUnaryClient(unaryClient("c1")), ChainUnaryClient(unaryClient("c2"), unaryClient("c3")),
			ChainStreamClient(streamClient("cs1"), streamClient("cs2")))}

		if _, err := c.Unary(ctx, wrapperspb.String("x"), marker{"m"}); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"c1>/test.Echo/Unary", "c2>/test.Echo/Unary", "c3>/test.Echo/Unary",
			"s1>/test.Echo/Unary", "s2>/test.Echo/Unary", "s3>/test.Echo/Unary",
			"handler", "<s3", "<s2", "<s1", "<c3", "<c2", "<c1",
		}
		if got := take(); !slices.Equal(got, want) {
			t.Errorf("unary:\n got %v\nwant %v", got, want)
		}

		s, err := c.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(wrapperspb.String("y")); err != nil {
			t.Fatal(err)
		}
		if m, err := s.Recv(); err != nil || m.Value != "server:y" {
			t.Fatalf("got %v, %v", m, err)
		}
		s.CloseSend()
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("got %v, want io.EOF", err)
		}
		// The server's side of the trace is complete once the stream's
		// trailer arrived: the interceptors return before it is sent. The
		// two sides' traces interleave, so each is checked alone.
		var clientSide, serverSide []string
		for _, e := range take() {
			if strings.HasPrefix(strings.TrimPrefix(e, "<"), "cs") {
				clientSide = append(clientSide, e)
			} else {
				serverSide = append(serverSide, e)
			}
		}
		if want := []string{"cs1>/test.Echo/Bidi", "cs2>/test.Echo/Bidi", "<cs2", "<cs1"}; !slices.Equal(clientSide, want) {
			t.Errorf("stream, client side:\n got %v\nwant %v", clientSide, want)
		}
		want = []string{
			"ss1>/test.Echo/Bidi", "ss2>/test.Echo/Bidi",
			"ss2 recv", "ss1 recv", "ss2 send", "ss1 send", "ss2 recv", "ss1 recv",
			"<ss2", "<ss1",
		}
		if !slices.Equal(serverSide, want) {
			t.Errorf("stream, server side:\n got %v\nwant %v", serverSide, want)
		}
	})
}

// countingStream is a ServerStream an interceptor wraps, recording each
// message through it.
type countingStream struct {
	ServerStream
	name   string
	record func(string)
}

func (s *countingStream) RecvMsg(m any) error {
	s.record(s.name + " recv")
	return s.ServerStream.RecvMsg(m)
}

func (s *countingStream) SendMsg(m any) error {
	s.record(s.name + " send")
	return s.ServerStream.SendMsg(m)
}
