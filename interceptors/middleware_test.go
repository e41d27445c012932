package interceptors_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	grpcmw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/realip"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/timeout"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The tests in this file run go-grpc-middleware's interceptors, unchanged,
// over muxrpc connections, and check what each visibly does.

// slogLogger adapts a *slog.Logger to the logging interceptors' Logger,
// as go-grpc-middleware's own examples do.
func slogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// record is one logged record: its message and its attributes as strings.
type record struct {
	msg   string
	attrs map[string]string
}

// recorder is a slog.Handler that keeps the records it handles.
type recorder struct {
	mu      sync.Mutex
	records []record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.records = append(r.records, record{msg: rec.Message, attrs: attrs})
	r.mu.Unlock()
	return nil
}

func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// finished returns the "finished call" records of method.
func (r *recorder) finished(method string) []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []record
	for _, rec := range r.records {
		if rec.msg == "finished call" && rec.attrs["grpc.method"] == method {
			out = append(out, rec)
		}
	}
	return out
}

// wantRecord checks that rec has the attributes of want.
func wantRecord(t *testing.T, rec record, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if rec.attrs[k] != v {
			t.Errorf("record %q: %s = %q, want %q (all: %v)", rec.msg, k, rec.attrs[k], v, rec.attrs)
		}
	}
}

func TestLogging(t *testing.T) {
	rec := &recorder{}
	logger := slogLogger(slog.New(rec))
	client, p := echoServe(t, nil, []rpc.ServerOption{
		interceptors.UnaryServer(logging.UnaryServerInterceptor(logger)),
		interceptors.StreamServer(logging.StreamServerInterceptor(logger)),
	})
	ctx := testCtx(t)
	if _, err := client.Unary(ctx, wrapperspb.String("hi")); err != nil {
		t.Fatal(err)
	}
	_, err := client.Unary(ctx, wrapperspb.String("fail"))
	wantCode(t, err, codes.FailedPrecondition)
	ss, err := client.ServerStream(ctx, wrapperspb.String("s"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(ss); err != nil {
		t.Fatal(err)
	}

	peerAddr := p.Session().LocalAddr().String()
	unary := rec.finished("Unary")
	if len(unary) != 2 {
		t.Fatalf("%d finished records for Unary, want 2", len(unary))
	}
	for i, code := range []string{"OK", "FailedPrecondition"} {
		wantRecord(t, unary[i], map[string]string{
			"grpc.component":   "server",
			"grpc.service":     "test.Echo",
			"grpc.method":      "Unary",
			"grpc.method_type": "unary",
			"grpc.code":        code,
			"peer.address":     peerAddr,
		})
	}
	if !strings.Contains(unary[1].attrs["grpc.error"], "asked to fail") {
		t.Errorf("grpc.error = %q", unary[1].attrs["grpc.error"])
	}
	stream := rec.finished("ServerStream")
	if len(stream) != 1 {
		t.Fatalf("%d finished records for ServerStream, want 1", len(stream))
	}
	wantRecord(t, stream[0], map[string]string{
		"grpc.service":     "test.Echo",
		"grpc.method_type": "server_stream",
		"grpc.code":        "OK",
		"peer.address":     peerAddr,
	})
}

func TestRecovery(t *testing.T) {
	handler := recovery.WithRecoveryHandler(func(p any) error {
		return status.Errorf(codes.DataLoss, "recovered: %v", p)
	})
	client, _ := echoServe(t, nil, []rpc.ServerOption{
		interceptors.UnaryServer(recovery.UnaryServerInterceptor(handler)),
		interceptors.StreamServer(recovery.StreamServerInterceptor(handler)),
	})
	ctx := testCtx(t)
	_, err := client.Unary(ctx, wrapperspb.String("panic"))
	wantCode(t, err, codes.DataLoss)
	if !strings.Contains(status.Convert(err).Message(), "recovered: asked to") {
		t.Errorf("message %q", status.Convert(err).Message())
	}
	ss, err := client.ServerStream(ctx, wrapperspb.String("panic"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(ss)
	wantCode(t, err, codes.DataLoss)
	// The session outlives the panics.
	if out, err := client.Unary(ctx, wrapperspb.String("after")); err != nil || out.Value != "server:after" {
		t.Fatalf("after the panics: %v, %v", out, err)
	}

	// Without a handler the panic becomes a *recovery.PanicError, which
	// carries no status: the caller gets Unknown, as from gRPC.
	client, _ = echoServe(t, nil, []rpc.ServerOption{interceptors.UnaryServer(recovery.UnaryServerInterceptor())})
	_, err = client.Unary(ctx, wrapperspb.String("panic"))
	wantCode(t, err, codes.Unknown)
	if !strings.Contains(status.Convert(err).Message(), "panic caught: asked to") {
		t.Errorf("message %q", status.Convert(err).Message())
	}
}

type userKey struct{}

// authImpl answers with the user the auth interceptor found.
type authImpl struct{ echoImpl }

func (a *authImpl) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	user, _ := ctx.Value(userKey{}).(string)
	return wrapperspb.String(user + ":" + in.Value), nil
}

func (a *authImpl) ServerStream(in *wrapperspb.StringValue, s rpc.ServerStreamingServer[wrapperspb.StringValue]) error {
	user, _ := s.Context().Value(userKey{}).(string)
	return s.Send(wrapperspb.String(user + ":" + in.Value))
}

// checkToken is an auth.AuthFunc: a bearer token "secret" is user alice.
func checkToken(ctx context.Context) (context.Context, error) {
	token, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return nil, err
	}
	if token != "secret" {
		return nil, status.Error(codes.Unauthenticated, "bad token")
	}
	return context.WithValue(ctx, userKey{}, "alice"), nil
}

// allButPing is a selector matcher: auth for every method but Ping.
var allButPing = selector.MatchFunc(func(_ context.Context, c grpcmw.CallMeta) bool {
	return c.FullMethod() != "/test.Echo/Ping"
})

func TestAuthSelector(t *testing.T) {
	client, _ := echoServe(t, &authImpl{echoImpl{name: "server"}}, []rpc.ServerOption{
		interceptors.UnaryServer(selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(checkToken), allButPing)),
		interceptors.StreamServer(selector.StreamServerInterceptor(auth.StreamServerInterceptor(checkToken), allButPing)),
	})
	ctx := testCtx(t)

	_, err := client.Unary(ctx, wrapperspb.String("hi"))
	wantCode(t, err, codes.Unauthenticated)
	_, err = client.Unary(metadata.AppendToOutgoingContext(ctx, "authorization", "bearer wrong"), wrapperspb.String("hi"))
	wantCode(t, err, codes.Unauthenticated)
	ss, err := client.ServerStream(ctx, wrapperspb.String("hi"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(ss)
	wantCode(t, err, codes.Unauthenticated)

	// Ping is skipped by the selector: it passes without a token.
	if out, err := client.Ping(ctx, wrapperspb.String("x")); err != nil || out.Value != "server:pong" {
		t.Fatalf("Ping without a token: %v, %v", out, err)
	}

	// With the token, the user the AuthFunc put in the context reaches the
	// handlers, through the wrapped stream for the streaming call.
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "bearer secret")
	if out, err := client.Unary(authed, wrapperspb.String("hi")); err != nil || out.Value != "alice:hi" {
		t.Fatalf("Unary with the token: %v, %v", out, err)
	}
	ss, err = client.ServerStream(authed, wrapperspb.String("s"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := recvAll(ss); err != nil || len(got) != 1 || got[0] != "alice:s" {
		t.Fatalf("ServerStream with the token: %v, %v", got, err)
	}
}

// countLimiter lets max calls through, then refuses.
type countLimiter struct {
	n, max int32
}

func (l *countLimiter) Limit(context.Context) error {
	if atomic.AddInt32(&l.n, 1) > l.max {
		return errors.New("over the limit")
	}
	return nil
}

func TestRatelimit(t *testing.T) {
	unary, stream := &countLimiter{max: 2}, &countLimiter{max: 1}
	client, _ := echoServe(t, nil, []rpc.ServerOption{
		interceptors.UnaryServer(ratelimit.UnaryServerInterceptor(unary)),
		interceptors.StreamServer(ratelimit.StreamServerInterceptor(stream)),
	})
	ctx := testCtx(t)
	for i := 0; i < 2; i++ {
		if _, err := client.Unary(ctx, wrapperspb.String("hi")); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err := client.Unary(ctx, wrapperspb.String("hi"))
	wantCode(t, err, codes.ResourceExhausted)
	if !strings.Contains(status.Convert(err).Message(), "/test.Echo/Unary is rejected by grpc_ratelimit") {
		t.Errorf("message %q", status.Convert(err).Message())
	}

	ss, err := client.ServerStream(ctx, wrapperspb.String("s"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := recvAll(ss); err != nil || len(got) != 3 {
		t.Fatalf("first stream: %v, %v", got, err)
	}
	ss, err = client.ServerStream(ctx, wrapperspb.String("s"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(ss)
	wantCode(t, err, codes.ResourceExhausted)
}

// deadlineImpl reports whether its handler saw a deadline.
type deadlineImpl struct {
	echoImpl
	sawDeadline atomic.Bool
}

func (d *deadlineImpl) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if _, ok := ctx.Deadline(); ok {
		d.sawDeadline.Store(true)
	}
	return d.echoImpl.Unary(ctx, in)
}

func TestTimeout(t *testing.T) {
	impl := &deadlineImpl{echoImpl: echoImpl{name: "server"}}
	client, _ := echoServe(t, impl, nil, interceptors.UnaryClient(timeout.UnaryClientInterceptor(100*time.Millisecond)))
	ctx := testCtx(t)
	if out, err := client.Unary(ctx, wrapperspb.String("quick")); err != nil || out.Value != "server:quick" {
		t.Fatalf("quick call: %v, %v", out, err)
	}
	start := time.Now()
	_, err := client.Unary(ctx, wrapperspb.String("wait"))
	wantCode(t, err, codes.DeadlineExceeded)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the call took %v", d)
	}
	if !impl.sawDeadline.Load() {
		t.Error("the handler saw no deadline: the interceptor's did not travel")
	}
}

// realipImpl answers with the address realip found.
type realipImpl struct{ echoImpl }

func (r *realipImpl) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	ip, ok := realip.FromContext(ctx)
	if !ok {
		return wrapperspb.String("none"), nil
	}
	return wrapperspb.String(ip.String()), nil
}

func (r *realipImpl) ServerStream(in *wrapperspb.StringValue, s rpc.ServerStreamingServer[wrapperspb.StringValue]) error {
	ip, ok := realip.FromContext(s.Context())
	if !ok {
		return s.Send(wrapperspb.String("none"))
	}
	return s.Send(wrapperspb.String(ip.String()))
}

func TestRealIP(t *testing.T) {
	headers := []string{realip.XForwardedFor}
	serveRealIP := func(trusted string) echoClient {
		nets := []netip.Prefix{netip.MustParsePrefix(trusted)}
		client, _ := echoServe(t, &realipImpl{}, []rpc.ServerOption{
			interceptors.UnaryServer(realip.UnaryServerInterceptor(nets, headers)),
			interceptors.StreamServer(realip.StreamServerInterceptor(nets, headers)),
		})
		return client
	}
	ctx := testCtx(t)
	forwarded := metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", "203.0.113.7")
	unary := func(client echoClient, ctx context.Context) string {
		t.Helper()
		out, err := client.Unary(ctx, wrapperspb.String(""))
		if err != nil {
			t.Fatal(err)
		}
		return out.Value
	}
	stream := func(client echoClient, ctx context.Context) string {
		t.Helper()
		ss, err := client.ServerStream(ctx, wrapperspb.String(""))
		if err != nil {
			t.Fatal(err)
		}
		got, err := recvAll(ss)
		if err != nil || len(got) != 1 {
			t.Fatalf("%v, %v", got, err)
		}
		return got[0]
	}

	// The loopback peer is trusted: its X-Forwarded-For is believed.
	trusting := serveRealIP("127.0.0.1/32")
	if got := unary(trusting, forwarded); got != "203.0.113.7" {
		t.Errorf("unary, trusted peer, forwarded: %s", got)
	}
	if got := stream(trusting, forwarded); got != "203.0.113.7" {
		t.Errorf("stream, trusted peer, forwarded: %s", got)
	}
	if got := unary(trusting, ctx); got != "127.0.0.1" {
		t.Errorf("unary, trusted peer, no header: %s", got)
	}
	// An untrusted peer's header is ignored: the peer's own address it is.
	distrusting := serveRealIP("10.0.0.0/8")
	if got := unary(distrusting, forwarded); got != "127.0.0.1" {
		t.Errorf("unary, untrusted peer, forwarded: %s", got)
	}
}

// flakyImpl fails its first failures attempts of each method with
// Unavailable, and notes the x-retry-attempt header of every attempt.
type flakyImpl struct {
	echoImpl
	failures int
	mu       sync.Mutex
	attempts map[string][]string
}

func (f *flakyImpl) attempt(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.attempts == nil {
		f.attempts = map[string][]string{}
	}
	f.attempts[method] = append(f.attempts[method], strings.Join(md.Get(retry.AttemptMetadataKey), ","))
	if len(f.attempts[method]) <= f.failures {
		return status.Error(codes.Unavailable, "not yet")
	}
	return nil
}

func (f *flakyImpl) seen(method string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.attempts[method]...)
}

func (f *flakyImpl) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if err := f.attempt(ctx, "Unary"); err != nil {
		return nil, err
	}
	return f.echoImpl.Unary(ctx, in)
}

func (f *flakyImpl) Ping(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if err := f.attempt(ctx, "Ping"); err != nil {
		return nil, err
	}
	return f.echoImpl.Ping(ctx, in)
}

func (f *flakyImpl) ServerStream(in *wrapperspb.StringValue, s rpc.ServerStreamingServer[wrapperspb.StringValue]) error {
	if err := f.attempt(s.Context(), "ServerStream"); err != nil {
		return err
	}
	return f.echoImpl.ServerStream(in, s)
}

func TestRetry(t *testing.T) {
	impl := &flakyImpl{echoImpl: echoImpl{name: "server"}, failures: 2}
	backoff := retry.WithBackoff(retry.BackoffLinear(time.Millisecond))
	client, _ := echoServe(t, impl, nil,
		interceptors.UnaryClient(retry.UnaryClientInterceptor(backoff)),
		interceptors.StreamClient(retry.StreamClientInterceptor(backoff)))
	ctx := testCtx(t)

	// The interceptor retries nothing by default (WithMax 0)...
	_, err := client.Ping(ctx, wrapperspb.String("x"))
	wantCode(t, err, codes.Unavailable)
	if got := impl.seen("Ping"); len(got) != 1 {
		t.Fatalf("Ping without WithMax: %d attempts, want 1", len(got))
	}
	// ...but retry.WithMax given to one call reaches it: Unavailable is
	// retried, and the server sees the attempt numbers.
	out, err := client.Unary(ctx, wrapperspb.String("hi"), retry.WithMax(3))
	if err != nil || out.Value != "server:hi" {
		t.Fatalf("Unary with WithMax(3): %v, %v", out, err)
	}
	if got, want := impl.seen("Unary"), []string{"", "1", "2"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("x-retry-attempt seen by the server: %q, want %q", got, want)
	}

	// A server-streaming call is retried too, the request sent again.
	ss, err := client.ServerStream(ctx, wrapperspb.String("s"), retry.WithMax(3))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := recvAll(ss); err != nil || len(got) != 3 || got[0] != "server:s" {
		t.Fatalf("ServerStream with WithMax(3): %v, %v", got, err)
	}
	if got, want := impl.seen("ServerStream"), []string{"", "1", "2"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("x-retry-attempt seen by the server: %q, want %q", got, want)
	}

	// Too few attempts: the last error comes back.
	impl2 := &flakyImpl{echoImpl: echoImpl{name: "server"}, failures: 5}
	client2, _ := echoServe(t, impl2, nil, interceptors.UnaryClient(retry.UnaryClientInterceptor(backoff, retry.WithMax(2))))
	_, err = client2.Unary(ctx, wrapperspb.String("hi"))
	wantCode(t, err, codes.Unavailable)
	if got := impl2.seen("Unary"); len(got) != 2 {
		t.Errorf("%d attempts with WithMax(2) set on the interceptor, want 2", len(got))
	}
}
