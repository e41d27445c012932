package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc/internal/faultproxy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// logRecorder is a slog.Handler that keeps every record, for tests to
// look at.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func newLogRecorder() (*logRecorder, *slog.Logger) {
	r := &logRecorder{}
	return r, slog.New(r)
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

func (r *logRecorder) records() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.recs...)
}

// find returns the first record with message msg whose attributes
// include want, and whether there is one.
func (r *logRecorder) find(msg string, want map[string]string) (slog.Record, bool) {
	for _, rec := range r.records() {
		if rec.Message != msg {
			continue
		}
		attrs := recordAttrs(rec)
		match := true
		for k, v := range want {
			if got, ok := attrs[k]; !ok || got != v {
				match = false
			}
		}
		if match {
			return rec, true
		}
	}
	return slog.Record{}, false
}

// await waits up to d for a record that find would return.
func (r *logRecorder) await(t *testing.T, d time.Duration, msg string, want map[string]string) slog.Record {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if rec, ok := r.find(msg, want); ok {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for a log record %q with %v (have %s)", d, msg, want, r)
		}
	}
}

// atLeast returns the records at level or above.
func (r *logRecorder) atLeast(level slog.Level) []slog.Record {
	var out []slog.Record
	for _, rec := range r.records() {
		if rec.Level >= level {
			out = append(out, rec)
		}
	}
	return out
}

// String lists the records, for failure messages.
func (r *logRecorder) String() string {
	var b strings.Builder
	for _, rec := range r.records() {
		fmt.Fprintf(&b, "\n\t%v %q %v", rec.Level, rec.Message, recordAttrs(rec))
	}
	return b.String()
}

// recordAttrs returns a record's attributes as strings, the stack's
// included.
func recordAttrs(rec slog.Record) map[string]string {
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.Resolve().String()
		return true
	})
	return attrs
}

// wantLevel fails the test unless rec is at level.
func wantLevel(t *testing.T, rec slog.Record, level slog.Level) {
	t.Helper()
	if rec.Level != level {
		t.Errorf("record %q at %v, want %v", rec.Message, rec.Level, level)
	}
}

// panicInHandler panics with v: its name is what the stack of a logged
// panic must show.
func panicInHandler(v string) {
	panic(v)
}

// panickingEcho is test.Echo whose unary and server-streaming handlers
// panic when asked "panic": the value says which.
func panickingEcho() *funcEcho {
	return &funcEcho{
		unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.Value == "panic" {
				panicInHandler("secret-unary-value")
			}
			return defaultEcho.Unary(ctx, in)
		},
		serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
			s.Send(wrapperspb.String("before the panic"))
			panicInHandler("secret-stream-value")
			return nil
		},
	}
}

// callPanics makes a unary and a server-streaming call through cc to
// handlers that panic, and checks the status each gets: Internal, naming
// the method and not the panic value.
func callPanics(t *testing.T, ctx context.Context, cc ClientConnInterface) {
	t.Helper()
	c := echoClient{cc}
	_, err := c.Unary(ctx, wrapperspb.String("panic"))
	wantPanicStatus(t, err, "/test.Echo/Unary")
	s, err := c.ServerStream(ctx, wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(); err != nil || m.Value != "before the panic" {
		t.Fatalf("got %v, %v", m, err)
	}
	_, err = s.Recv()
	wantPanicStatus(t, err, "/test.Echo/ServerStream")
}

func wantPanicStatus(t *testing.T, err error, method string) {
	t.Helper()
	wantStatus(t, err, codes.Internal, "rpc: handler for "+method+" panicked")
	if msg := status.Convert(err).Message(); strings.Contains(msg, "secret") {
		t.Errorf("the caller's status %q leaks the panic value", msg)
	}
}

// checkPanicRecord waits for rec's record of the panic of method's
// handler, with the peer's address, and checks its level, value and
// stack.
func checkPanicRecord(t *testing.T, r *logRecorder, method, peer, value string, more map[string]string) {
	t.Helper()
	want := map[string]string{"method": method, "peer": peer, "panic": value}
	for k, v := range more {
		want[k] = v
	}
	rec := r.await(t, 5*time.Second, "rpc: handler panicked", want)
	wantLevel(t, rec, slog.LevelError)
	if stack := recordAttrs(rec)["stack"]; !strings.Contains(stack, "rpc.panicInHandler(") {
		t.Errorf("the logged stack does not show the panicking function:\n%s", stack)
	}
}

// TestHandlerPanicLogged panics in a server's unary and streaming
// handlers, on both transports: each caller gets Internal naming the
// method but not the panic value, and the server's logger gets an Error
// record with the method, the caller's address, its Identity's name, the
// value and a stack that shows the panicking function. The client's
// logger gets nothing at Info or above, and the session goes on.
func TestHandlerPanicLogged(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srvLog, srvLogger := newLogRecorder()
		cliLog, cliLogger := newLogRecorder()
		srv := NewServer(muxOpt(tr), WithLogger(srvLogger), WithAuthenticator(func(context.Context, *SessionHello) (Identity, error) {
			return Identity{Name: "agent-7"}, nil
		}))
		srv.RegisterService(&echoDesc, panickingEcho())
		p := dial(t, serve(t, srv), muxOpt(tr), WithLogger(cliLogger))
		callPanics(t, ctx, p)
		checkEcho(t, ctx, p, "server")
		from := p.Session().LocalAddr().String()
		checkPanicRecord(t, srvLog, "/test.Echo/Unary", from, "secret-unary-value", map[string]string{"identity": "agent-7"})
		checkPanicRecord(t, srvLog, "/test.Echo/ServerStream", from, "secret-stream-value", map[string]string{"identity": "agent-7"})
		if recs := cliLog.atLeast(slog.LevelInfo); len(recs) != 0 {
			t.Errorf("the client logged %s", cliLog)
		}
	})
}

// TestCallbackPanicLogged panics in the handlers of a service a client
// serves with WithServices, called back by the server: the client's
// logger gets the Error record, with the server's address, and the
// server's none; a client without a logger of its own logs with that of
// WithServices' Server.
func TestCallbackPanicLogged(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, own := range []bool{true, false} {
			t.Run(fmt.Sprintf("ownLogger=%v", own), func(t *testing.T) {
				ctx := testCtx(t, 10*time.Second)
				srvLog, srvLogger := newLogRecorder()
				cliLog, cliLogger := newLogRecorder()
				srv := NewServer(muxOpt(tr), WithLogger(srvLogger))
				srv.RegisterService(&echoDesc, defaultEcho)
				addr := serve(t, srv)
				var callbacks *Server
				opts := []DialOption{muxOpt(tr)}
				if own {
					callbacks = NewServer(WithLogger(slog.New(slog.DiscardHandler)))
					opts = append(opts, WithLogger(cliLogger))
				} else {
					callbacks = NewServer(WithLogger(cliLogger))
				}
				callbacks.RegisterService(&echoDesc, panickingEcho())
				dial(t, addr, append(opts, WithServices(callbacks))...)
				back := onlyPeer(t, srv)
				callPanics(t, ctx, back)
				checkPanicRecord(t, cliLog, "/test.Echo/Unary", addr, "secret-unary-value", nil)
				checkPanicRecord(t, cliLog, "/test.Echo/ServerStream", addr, "secret-stream-value", nil)
				if recs := srvLog.atLeast(slog.LevelInfo); len(recs) != 0 {
					t.Errorf("the server logged %s", srvLog)
				}
			})
		}
	})
}

// TestDefaultLogger panics in a handler of a Server made without a
// logger, and of one made WithLogger(nil), after slog.SetDefault: the
// default logger of when the panic comes gets the record.
func TestDefaultLogger(t *testing.T) {
	old := slog.Default()
	t.Cleanup(func() { slog.SetDefault(old) })
	for _, opts := range [][]ServerOption{nil, {WithLogger(nil)}} {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(opts...)
		srv.RegisterService(&echoDesc, panickingEcho())
		p := dial(t, serve(t, srv))
		rec, logger := newLogRecorder()
		slog.SetDefault(logger)
		if srv.Logger() != logger {
			t.Error("Server.Logger is not the default logger")
		}
		_, err := echoClient{p}.Unary(ctx, wrapperspb.String("panic"))
		wantPanicStatus(t, err, "/test.Echo/Unary")
		checkPanicRecord(t, rec, "/test.Echo/Unary", p.Session().LocalAddr().String(), "secret-unary-value", nil)
		slog.SetDefault(old)
	}
}

// TestSuccessfulCallsLogNothing makes 100 calls of each kind that
// succeed, then ends the session in good order: neither side logs
// anything at Info or above.
func TestSuccessfulCallsLogNothing(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		srvLog, srvLogger := newLogRecorder()
		cliLog, cliLogger := newLogRecorder()
		srv := NewServer(muxOpt(tr), WithLogger(srvLogger))
		srv.RegisterService(&echoDesc, defaultEcho)
		p := dial(t, serve(t, srv), muxOpt(tr), WithLogger(cliLogger))
		c := echoClient{p}
		for i := range 100 {
			checkEcho(t, ctx, p, "server")
			s, err := c.Bidi(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(wrapperspb.String(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
			s.CloseSend()
			if _, err := s.Recv(); err != io.EOF {
				t.Fatalf("the stream's end: %v", err)
			}
		}
		server := onlyPeer(t, srv)
		if err := p.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		await(t, server.Done(), 5*time.Second, "the server's session to end")
		// The session's end is logged at Debug, after it has ended.
		cliLog.await(t, 5*time.Second, "rpc: session ended", nil)
		srvLog.await(t, 5*time.Second, "rpc: session ended", nil)
		for _, r := range []*logRecorder{srvLog, cliLog} {
			if recs := r.atLeast(slog.LevelInfo); len(recs) != 0 {
				t.Errorf("logged at Info or above: %s", r)
			}
		}
		// Smux has no GoAway: its server sees the connection end.
		if rec, _ := srvLog.find("rpc: session ended", nil); tr == mux.Native && recordAttrs(rec)["error"] != "" {
			t.Errorf("a session ended in good order logged an error: %s", srvLog)
		}
	})
}

// TestProtocolErrorLogged has a client written by hand send a frame no
// peer may send, once its session is admitted, on each transport: the
// server's logger gets a Warn record of a protocol error with the
// client's address.
func TestProtocolErrorLogged(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srvLog, srvLogger := newLogRecorder()
		admitted := make(chan struct{}, 1)
		srv := NewServer(muxOpt(tr), WithLogger(srvLogger), OnPeer(func(*Peer) { admitted <- struct{}{} }))
		srv.RegisterService(&echoDesc, defaultEcho)
		addr := serve(t, srv)
		var conn net.Conn
		if tr == mux.Native {
			a := dialNative(t, addr, true, nil)
			await(t, admitted, 5*time.Second, "the session's admission")
			a.write(append(nativeHeader(nil, 1<<24-1, nfData, nfOpen, a.id()), make([]byte, 100)...)) // over MaxFrameSize
			conn = a.conn
		} else {
			a := dialSmux(t, addr)
			await(t, admitted, 5*time.Second, "the session's admission")
			a.write([]byte{9, 9, 9, 9, 9, 9, 9, 9}) // smux version 9
			conn = a.conn
		}
		rec := srvLog.await(t, 5*time.Second, "rpc: session ended: the peer broke the protocol", map[string]string{"peer": conn.LocalAddr().String()})
		wantLevel(t, rec, slog.LevelWarn)
		if e := recordAttrs(rec)["error"]; !strings.Contains(e, "protocol error") {
			t.Errorf("the record's error is %q", e)
		}
	})
}

// TestKeepAliveTimeoutLogged silences the link under an idle session
// with keepalive (interval 250 ms, timeout 1 s), on each transport: both
// sides' loggers get a Warn record of the keepalive timeout, with the
// other side's address.
func TestKeepAliveTimeoutLogged(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		t.Parallel() // waits for keepalive, and takes little CPU
		srvLog, srvLogger := newLogRecorder()
		cliLog, cliLogger := newLogRecorder()
		srv := NewServer(keepAliveOpt(tr), WithLogger(srvLogger))
		srv.RegisterService(&echoDesc, defaultEcho)
		px := proxyTo(t, serve(t, srv))
		client := dial(t, px.Addr(), keepAliveOpt(tr), WithLogger(cliLogger))
		server := onlyPeer(t, srv)
		px.Silence(faultproxy.Both, true)
		_, most := keepAliveBounds()
		const msg = "rpc: session ended: keepalive timeout"
		wantLevel(t, srvLog.await(t, most+5*time.Second, msg, map[string]string{"peer": server.RemoteAddr().String()}), slog.LevelWarn)
		wantLevel(t, cliLog.await(t, most+5*time.Second, msg, map[string]string{"peer": px.Addr()}), slog.LevelWarn)
		if !errors.Is(client.Err(), mux.ErrKeepAliveTimeout) || !errors.Is(server.Err(), mux.ErrKeepAliveTimeout) {
			t.Errorf("the sessions ended with %v and %v", client.Err(), server.Err())
		}
	})
}

// TestRefusedSessionLogged has the Authenticator refuse a session, on
// each transport: the server logs it at Debug, with the client's address
// and the refusal's code, and nothing at Info or above.
func TestRefusedSessionLogged(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srvLog, srvLogger := newLogRecorder()
		from := make(chan string, 1)
		srv := NewServer(muxOpt(tr), WithLogger(srvLogger), WithAuthenticator(func(_ context.Context, h *SessionHello) (Identity, error) {
			from <- h.RemoteAddr.String()
			return Identity{}, status.Error(codes.PermissionDenied, "not you")
		}))
		srv.RegisterService(&echoDesc, defaultEcho)
		addr := serve(t, srv)
		_, err := Dial(testCtx(t, 10*time.Second), addr, muxOpt(tr), WithLogger(slog.New(slog.DiscardHandler)))
		wantStatus(t, err, codes.PermissionDenied, "not you")
		peer := await(t, from, time.Second, "the Authenticator")
		rec := srvLog.await(t, 5*time.Second, "rpc: session refused", map[string]string{"peer": peer, "code": "PermissionDenied", "error": "not you"})
		wantLevel(t, rec, slog.LevelDebug)
		srvLog.await(t, 5*time.Second, "rpc: session ended", map[string]string{"peer": peer})
		if recs := srvLog.atLeast(slog.LevelInfo); len(recs) != 0 {
			t.Errorf("a refusal logged at Info or above: %s", srvLog)
		}
	})
}

// TestFailedHelloLogged opens sessions that break the session hello, on
// each transport: one that sends none within the handshake timeout
// (300 ms here), and one whose hello is not a HELLO part. The server
// logs each at Warn with the client's address.
func TestFailedHelloLogged(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		cfg := &mux.Config{Transport: tr, HandshakeTimeout: 300 * time.Millisecond}
		srvLog, srvLogger := newLogRecorder()
		srv := NewServer(MuxConfig(cfg), WithLogger(srvLogger))
		srv.RegisterService(&echoDesc, defaultEcho)
		addr := serve(t, srv)
		rawSession := func() *mux.Session {
			sess, err := mux.Dial(ctx, "tcp", addr, &mux.Config{Transport: tr})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sess.Close() })
			return sess
		}

		silent := rawSession()
		rec := srvLog.await(t, 5*time.Second, "rpc: no session hello within the handshake timeout", map[string]string{"peer": silent.LocalAddr().String()})
		wantLevel(t, rec, slog.LevelWarn)

		garbled := rawSession()
		st, err := garbled.OpenType(ctx, HelloStreamType)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.WriteLast(part(partCallHeader)); err != nil {
			t.Fatal(err)
		}
		rec = srvLog.await(t, 5*time.Second, "rpc: session hello failed", map[string]string{"peer": garbled.LocalAddr().String(), "code": "InvalidArgument"})
		wantLevel(t, rec, slog.LevelWarn)
		st.Close()
	})
}
