package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// WithLogger sets the logger a Server, or a dialing Peer or Client, logs
// with. Without it, or with nil, the package logs with slog.Default(),
// looked up each time it logs, so that a later slog.SetDefault is
// honoured. To turn logging off, pass a logger whose handler discards
// everything: slog.New(slog.DiscardHandler).
//
// The package logs no successful call and nothing once per call at Info
// or above: only a handler's panic, and sessions that ended or were
// refused. Each record has the attribute "peer", the other side's
// address, and "identity", the Identity's Name, once the Authenticator
// has given one:
//
//	Event                                                  Level  Message
//	a handler panicked (also gRPC calls through grpcport)  Error  rpc: handler panicked
//	the peer broke the protocol (mux.ErrProtocol)          Warn   rpc: session ended: the peer broke the protocol
//	the peer reported that this side broke the protocol
//	  (its GoAway with mux.GoAwayProtocolError)            Warn   rpc: session ended: the peer reported a protocol error
//	the peer stopped answering (mux.ErrKeepAliveTimeout)   Warn   rpc: session ended: keepalive timeout
//	no session hello within the handshake timeout          Warn   rpc: no session hello within the handshake timeout
//	a malformed session hello, or one not finished within
//	  the handshake timeout                                Warn   rpc: session hello failed
//	the Authenticator refused the session                  Debug  rpc: session refused
//	any other end of a session, a normal one included      Debug  rpc: session ended
//
// A panic's record also has "method", the full method name, "panic", the
// value the handler panicked with, and "stack", the panicking
// goroutine's stack; the caller gets Internal with a message that names
// the method and not the panic value, as gRPC's recovery interceptor
// does. The records of a session's end have "error", the session's error
// (see Peer.Err), absent for a session closed in good order; those of a
// failed hello "code" and "error", the status the session was refused
// with.
//
// A Peer dialed with WithServices logs its callbacks' panics with its own
// logger, or, if it was given none, with the logger of WithServices'
// Server.
func WithLogger(l *slog.Logger) Option {
	return bothOption(func(c *peerConfig) { c.logger = l })
}

// Logger returns the logger the Server logs with: WithLogger's, or
// slog.Default() at the time of the call. Packages that serve the
// Server's services otherwise (rpc/grpcport) log with it.
func (s *Server) Logger() *slog.Logger {
	if l := s.cfg.peer.logger; l != nil {
		return l
	}
	return slog.Default()
}

// logger returns the logger the Peer logs with: its own, else that of
// the Server whose services it serves, else the default.
func (p *Peer) logger() *slog.Logger {
	if p.cfg.logger != nil {
		return p.cfg.logger
	}
	if p.srv != nil {
		return p.srv.Logger()
	}
	return slog.Default()
}

// peerAttrs returns the attributes that say which peer a record is about.
func (p *Peer) peerAttrs(attrs []slog.Attr) []slog.Attr {
	attrs = append(attrs, slog.String("peer", addrString(p.RemoteAddr())))
	if name := p.Identity().Name; name != "" {
		attrs = append(attrs, slog.String("identity", name))
	}
	return attrs
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// panicStatus is the status of a call whose handler panicked: it names
// the method, not the panic value, which only the log gets.
func panicStatus(method string) *status.Status {
	return status.Newf(codes.Internal, "rpc: handler for %s panicked", method)
}

// panicked logs the panic r of the call's handler, with the stack of the
// panicking goroutine, and returns the status the call fails with. It is
// called from the deferred function that recovered r, so the stack still
// holds the panicking frames.
func (c *serverCall) panicked(r any) *status.Status {
	stack := debug.Stack()
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String("method", c.m.fullName))
	attrs = c.peer.peerAttrs(attrs)
	attrs = append(attrs, slog.Any("panic", r), slog.String("stack", string(stack)))
	c.peer.logger().LogAttrs(c, slog.LevelError, "rpc: handler panicked", attrs...)
	return panicStatus(c.m.fullName)
}

// logSessionEnd logs the end of the Peer's session, once it has ended.
func (p *Peer) logSessionEnd() {
	err := p.sess.Err()
	level, msg := slog.LevelDebug, "rpc: session ended"
	var g *mux.GoAwayError
	switch {
	case errors.Is(err, mux.ErrProtocol):
		level, msg = slog.LevelWarn, "rpc: session ended: the peer broke the protocol"
	case errors.Is(err, mux.ErrKeepAliveTimeout):
		level, msg = slog.LevelWarn, "rpc: session ended: keepalive timeout"
	case errors.As(err, &g) && g.Remote && g.Code == mux.GoAwayProtocolError:
		level, msg = slog.LevelWarn, "rpc: session ended: the peer reported a protocol error"
	}
	l := p.logger()
	ctx := context.Background()
	if !l.Enabled(ctx, level) {
		return
	}
	attrs := p.peerAttrs(make([]slog.Attr, 0, 3))
	if err := sessionEndError(err); err != nil {
		attrs = append(attrs, slog.Any("error", err))
	}
	l.LogAttrs(ctx, level, msg, attrs...)
}

// logNoHello logs a session that sent no hello within the handshake
// timeout, which then ends.
func (p *Peer) logNoHello() {
	p.logger().LogAttrs(context.Background(), slog.LevelWarn, "rpc: no session hello within the handshake timeout", p.peerAttrs(nil)...)
}

// logRefusal logs a session hello that failed with s: refused by the
// Authenticator (byAuth), or malformed or late. ctx is the hello's: a
// hello cut short by the session's end is left to logSessionEnd.
func (p *Peer) logRefusal(ctx context.Context, s *status.Status, byAuth bool) {
	if errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	level, msg := slog.LevelWarn, "rpc: session hello failed"
	if byAuth && ctx.Err() == nil {
		level, msg = slog.LevelDebug, "rpc: session refused"
	}
	l := p.logger()
	if !l.Enabled(ctx, level) {
		return
	}
	attrs := p.peerAttrs(make([]slog.Attr, 0, 3))
	attrs = append(attrs, slog.String("code", s.Code().String()), slog.String("error", s.Message()))
	l.LogAttrs(context.WithoutCancel(ctx), level, msg, attrs...)
}
