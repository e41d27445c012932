// Command middleware runs go-grpc-middleware's interceptors on muxrpc, in
// both directions of one session, and serves their Prometheus metrics over
// that same session.
//
// The server chains the Prometheus provider's metrics, logging (to
// log/slog), bearer-token auth and panic recovery on the calls it serves;
// its client interceptor puts its own token on the calls it makes back to
// the client. The client exposes Notifier with logging, auth and recovery of
// its own, so that the server's calls back are logged and authorized on the
// client as the client's calls are on the server. The client makes one call
// that auth refuses, calls that it accepts, one whose handler panics (the
// recovery interceptor turns it into Internal), and one whose handler calls
// the client back; then it fetches /metrics from the server over an HTTP
// stream of the session (mux.TypeNet, as in examples/http) and prints the
// handled-call counters and the peer count of rpc/peermetrics.
//
// The log lines leave out what changes from run to run (times, durations,
// deadlines, addresses), so that the output is the same every time.
//
// By default the server and the client run in one process, on a loopback
// port:
//
//	go run ./examples/middleware
//
// or in two processes:
//
//	go run ./examples/middleware -listen 127.0.0.1:7070
//	go run ./examples/middleware -connect 127.0.0.1:7070
//
// SIGINT or SIGTERM stops the server with GracefulStop, which lets the calls
// in flight finish.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/peermetrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	clientToken = "client-secret" // what the server wants from its clients
	serverToken = "server-secret" // what the client wants from the server's calls back
)

func main() {
	listen := flag.String("listen", "", "only serve, on this address")
	connect := flag.String("connect", "", "only run the client, against this address")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := &syncWriter{w: os.Stdout}
	var err error
	switch {
	case *listen != "":
		var lis net.Listener
		if lis, err = net.Listen("tcp", *listen); err == nil {
			log.Printf("serving on %s", lis.Addr())
			err = serveUntilSignal(ctx, out, lis)
		}
	case *connect != "":
		err = runClient(ctx, out, *connect)
	default:
		err = runBoth(ctx, out)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runBoth serves on a loopback port and runs the client against it.
func runBoth(ctx context.Context, out io.Writer) error {
	out = &syncWriter{w: out}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s := newServer(out)
	served := make(chan error, 1)
	go func() { served <- s.rpc.Serve(lis) }()
	err = runClient(ctx, out, lis.Addr().String())
	s.stop()
	return errors.Join(err, <-served) // Serve returns nil after GracefulStop
}

// serveUntilSignal serves on lis until ctx ends (SIGINT or SIGTERM), then
// stops gracefully.
func serveUntilSignal(ctx context.Context, out io.Writer, lis net.Listener) error {
	s := newServer(out)
	served := make(chan error, 1)
	go func() { served <- s.rpc.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		log.Print("stopping: letting the calls in flight finish")
		s.stop()
		return <-served
	}
}

// server is the rpc server and the HTTP server it runs on each session.
type server struct {
	rpc  *rpc.Server
	http *http.Server
	wg   sync.WaitGroup // the HTTP servers' Serve calls, one a session
}

// newServer returns the Echo server with its interceptors, and /metrics
// served over every session's HTTP streams.
func newServer(out io.Writer) *server {
	metrics := grpcprom.NewServerMetrics()
	logger := newLogger(out, "server")
	checkClient := checkToken(clientToken)
	s := &server{}
	s.rpc = rpc.NewServer(
		// Outermost first: metrics and logging see what auth and recovery
		// made of the call.
		interceptors.UnaryServer(
			metrics.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(logger, logging.WithLogOnEvents(logging.FinishCall)),
			auth.UnaryServerInterceptor(checkClient),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(recovered)),
		),
		interceptors.StreamServer(
			metrics.StreamServerInterceptor(),
			logging.StreamServerInterceptor(logger, logging.WithLogOnEvents(logging.FinishCall)),
			auth.StreamServerInterceptor(checkClient),
			recovery.StreamServerInterceptor(recovery.WithRecoveryHandler(recovered)),
		),
		// A client interceptor on a Server runs on its calls back to its
		// clients: here it presents the server's token.
		interceptors.UnaryClient(withToken(serverToken)),
		rpc.OnPeer(s.serveHTTP),
	)
	echov1.RegisterEchoServer(s.rpc, echoServer{})
	metrics.InitializeMetrics(interceptors.ServiceInfo(s.rpc))

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics, peermetrics.NewCollector(s.rpc))
	handlers := http.NewServeMux()
	handlers.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.http = &http.Server{Handler: handlers, ReadHeaderTimeout: 5 * time.Second}
	return s
}

// serveHTTP serves HTTP on the peer's TypeNet streams until its session
// ends or the server stops.
func (s *server) serveHTTP(p *rpc.Peer) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.http.Serve(p.Session().NetListener(mux.TypeNet))
	}()
}

// stop stops the rpc server gracefully, then the HTTP servers.
func (s *server) stop() {
	s.rpc.GracefulStop()
	s.http.Close()
	s.wg.Wait()
}

// runClient dials addr exposing a Notifier with interceptors of its own,
// makes its calls, and fetches the server's metrics over the session.
func runClient(ctx context.Context, out io.Writer, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	logger := newLogger(out, "client")
	checkServer := checkToken(serverToken)
	callbacks := rpc.NewServer(
		interceptors.UnaryServer(
			logging.UnaryServerInterceptor(logger, logging.WithLogOnEvents(logging.FinishCall)),
			auth.UnaryServerInterceptor(checkServer),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(recovered)),
		),
		interceptors.StreamServer(
			logging.StreamServerInterceptor(logger, logging.WithLogOnEvents(logging.FinishCall)),
			auth.StreamServerInterceptor(checkServer),
			recovery.StreamServerInterceptor(recovery.WithRecoveryHandler(recovered)),
		),
	)
	echov1.RegisterNotifierServer(callbacks, notifier{out: out})
	peer, err := rpc.Dial(ctx, addr, rpc.WithServices(callbacks))
	if err != nil {
		return err
	}
	defer peer.Shutdown(ctx)
	echo := echov1.NewEchoClient(peer)

	// No token: auth refuses the call before the handler runs.
	_, err = echo.Unary(ctx, &echov1.EchoRequest{Message: "hello"})
	fmt.Fprintf(out, "client: Unary without a token: %v\n", err)

	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "bearer "+clientToken)
	resp, err := echo.Unary(authed, &echov1.EchoRequest{Message: "hello"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "client: Unary with the token: %s\n", resp.Message)

	stream, err := echo.ServerStream(authed, &echov1.ServerStreamRequest{Message: "tick", Count: 2})
	if err != nil {
		return err
	}
	var ticks []string // printed at the end of the stream, after the server's log line
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		ticks = append(ticks, fmt.Sprintf("%s #%d", r.Message, r.Sequence))
	}
	fmt.Fprintf(out, "client: ServerStream: %s\n", strings.Join(ticks, ", "))

	// The handler panics; recovery answers Internal and the server lives on.
	_, err = echo.Unary(authed, &echov1.EchoRequest{Message: "panic"})
	if status.Code(err) != codes.Internal {
		return fmt.Errorf("a panicking handler: got %v, want Internal", err)
	}
	fmt.Fprintf(out, "client: Unary that panics: %v\n", err)

	// The handler calls the client's Notifier back, through the client's
	// own interceptors.
	ann, err := echo.Announce(authed, &echov1.AnnounceRequest{Messages: []string{"first", "second"}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "client: Announce: the server delivered %d notifications\n", ann.Delivered)

	return printMetrics(ctx, out, peer.Session())
}

// printMetrics fetches /metrics over an HTTP stream of sess and prints the
// handled-call counters that are not zero, and the number of peers.
func printMetrics(ctx context.Context, out io.Writer, sess *mux.Session) error {
	transport := &http.Transport{DialContext: sess.DialContext}
	defer transport.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://server/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "grpc_server_handled_total{") && !strings.HasSuffix(line, " 0"),
			strings.HasPrefix(line, "muxrpc_peers "):
			fmt.Fprintf(out, "client: /metrics: %s\n", line)
		}
	}
	return sc.Err()
}

// newLogger returns go-grpc-middleware's logger on log/slog, writing lines
// to out that start with "[side] " and leave out what differs between runs.
func newLogger(out io.Writer, side string) logging.Logger {
	h := slog.NewTextHandler(&prefixWriter{prefix: "[" + side + " log] ", w: out}, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey, "grpc.start_time", "grpc.request.deadline", "grpc.time_ms",
				"peer.address", "protocol", "grpc.component", "grpc.method_type":
				return slog.Attr{}
			}
			return a
		},
	})
	l := slog.New(h)
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// checkToken returns an auth function that wants "authorization: bearer
// token" in the call's metadata.
func checkToken(token string) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		got, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, err
		}
		if got != token {
			return nil, status.Error(codes.Unauthenticated, "wrong token")
		}
		return ctx, nil
	}
}

// withToken returns a client interceptor that sends "authorization: bearer
// token" with each call.
func withToken(token string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "bearer "+token), method, req, reply, cc, opts...)
	}
}

// recovered turns a handler's panic into the call's status.
func recovered(p any) error {
	return status.Errorf(codes.Internal, "recovered from panic: %v", p)
}

// echoServer implements Echo; Unary panics when asked to, and Announce
// calls the caller back.
type echoServer struct {
	echov1.UnimplementedEchoServer
}

func (echoServer) Unary(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	if req.Message == "panic" {
		panic("asked to")
	}
	return &echov1.EchoResponse{Message: req.Message}, nil
}

func (echoServer) ServerStream(req *echov1.ServerStreamRequest, stream echov1.Echo_ServerStreamServer) error {
	for i := range req.Count {
		if err := stream.Send(&echov1.EchoResponse{Message: req.Message, Sequence: int64(i)}); err != nil {
			return err
		}
	}
	return nil
}

// Announce calls the caller's Notifier, on the caller's own session; the
// server's client interceptor adds the server's token.
func (echoServer) Announce(ctx context.Context, req *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	caller := echov1.NewNotifierClient(rpc.PeerFromContext(ctx))
	var delivered int32
	for i, m := range req.Messages {
		if _, err := caller.Notify(ctx, &echov1.Notification{Message: m, Sequence: int64(i)}); err != nil {
			return nil, err
		}
		delivered++
	}
	return &echov1.AnnounceResponse{Delivered: delivered}, nil
}

// notifier is the service the client exposes to the server.
type notifier struct {
	echov1.UnimplementedNotifierServer
	out io.Writer
}

func (n notifier) Notify(ctx context.Context, note *echov1.Notification) (*emptypb.Empty, error) {
	fmt.Fprintf(n.out, "client: the server called back: %q\n", note.Message)
	return &emptypb.Empty{}, nil
}

// syncWriter serializes writes from the goroutines of both sides.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// prefixWriter starts each write, a log record, with prefix.
type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte(p.prefix), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}
