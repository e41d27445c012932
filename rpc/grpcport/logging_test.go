package grpcport_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcport"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}

func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// panicRecord returns the attributes of the record of method's panic, if
// there is one, and its level.
func (r *logRecorder) panicRecord(method string) (map[string]string, slog.Level, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		attrs := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.Resolve().String()
			return true
		})
		if rec.Message == "rpc: handler panicked" && attrs["method"] == method {
			return attrs, rec.Level, true
		}
	}
	return nil, 0, false
}

// panicNow panics with v: its name is what the logged stack must show.
func panicNow(v string) { panic(v) }

// panickingEcho is the echo service whose unary and server-streaming
// handlers panic.
type panickingEcho struct{ echo }

func (panickingEcho) Unary(context.Context, *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	panicNow("secret-unary-value")
	return nil, nil
}

func (panickingEcho) ServerStream(in *echov1.ServerStreamRequest, stream rpc.ServerStreamingServer[echov1.EchoResponse]) error {
	panicNow("secret-stream-value")
	return nil
}

// TestGRPCHandlerPanicLogged panics in unary and streaming handlers
// called by gRPC-Go's client on the shared port, on both transports of
// the port's muxrpc side: the call fails with Internal naming the method,
// not the panic value, and the rpc.Server's logger gets an Error record
// with the method, the caller's address, its Identity's name, the value
// and a stack that shows the panicking function.
func TestGRPCHandlerPanicLogged(t *testing.T) {
	for _, tc := range transports {
		t.Run(tc.name, func(t *testing.T) {
			rec := &logRecorder{}
			auth := rpc.WithAuthenticator(func(context.Context, *rpc.SessionHello) (rpc.Identity, error) {
				return rpc.Identity{Name: "grpc-agent"}, nil
			})
			srv := rpc.NewServer(rpc.WithLogger(slog.New(rec)), auth, rpc.MuxConfig(&mux.Config{Transport: tc.tr}))
			echov1.RegisterEchoServer(srv, panickingEcho{})
			port := startServing(t, srv)
			cc := grpcDial(t, port, insecure.NewCredentials())
			ctx := ctxFor(t, 10*time.Second)

			var local string
			err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "x"}, new(echov1.EchoResponse))
			wantPanicStatus(t, err, echov1.Echo_Unary_FullMethodName)
			st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, echov1.Echo_ServerStream_FullMethodName)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SendMsg(&echov1.ServerStreamRequest{Message: "x", Count: 1}); err != nil {
				t.Fatal(err)
			}
			st.CloseSend()
			wantPanicStatus(t, st.RecvMsg(new(echov1.EchoResponse)), echov1.Echo_ServerStream_FullMethodName)

			for method, value := range map[string]string{
				echov1.Echo_Unary_FullMethodName:        "secret-unary-value",
				echov1.Echo_ServerStream_FullMethodName: "secret-stream-value",
			} {
				attrs, level, ok := rec.panicRecord(method)
				if !ok {
					t.Fatalf("no record of %s's panic", method)
				}
				if level != slog.LevelError || attrs["panic"] != value || attrs["identity"] != "grpc-agent" {
					t.Errorf("%s: record at %v with %v", method, level, attrs)
				}
				if !strings.HasPrefix(attrs["peer"], "127.0.0.1:") || attrs["peer"] == port {
					t.Errorf("%s: the record's peer is %q, not the caller's address", method, attrs["peer"])
				}
				if local == "" {
					local = attrs["peer"]
				} else if attrs["peer"] != local {
					t.Errorf("the records name two peers, %s and %s, for one connection", local, attrs["peer"])
				}
				if !strings.Contains(attrs["stack"], "grpcport_test.panicNow(") {
					t.Errorf("%s: the stack does not show the panicking function:\n%s", method, attrs["stack"])
				}
			}
		})
	}
}

func wantPanicStatus(t *testing.T, err error, method string) {
	t.Helper()
	s := status.Convert(err)
	if want := fmt.Sprintf("rpc: handler for %s panicked", method); s.Code() != codes.Internal || s.Message() != want {
		t.Errorf("got %v %q, want Internal %q", s.Code(), s.Message(), want)
	}
}

// startServing serves srv on a shared port until the test ends, and
// returns its address.
func startServing(t *testing.T, srv *rpc.Server) string {
	t.Helper()
	port := grpcport.New(srv)
	lis := listen(t)
	done := make(chan error, 1)
	go func() { done <- port.Serve(lis) }()
	t.Cleanup(func() {
		port.Stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Stop")
		}
	})
	return lis.Addr().String()
}
