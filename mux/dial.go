package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"time"
)

// Dial connects to addr and starts the client side of a session on the
// connection. ctx bounds both the dial and the handshake.
//
// A server that does not speak muxrpc fails the handshake with
// ErrNotMuxrpc, whose text says what the server speaks where that can be
// told: smux, TLS, HTTP/2 (a gRPC server) or HTTP/1.x. Two kinds of
// server say nothing to a muxrpc preface, and Dial asks them again on a
// second connection: a TLS server, which hangs up (Dial then sends a TLS
// ClientHello), and an HTTP/1.x server, which waits for a request line
// (when the server has been silent for a moment, Dial sends a preface
// that ends a line). Each answer is kept for a minute.
func Dial(ctx context.Context, network, addr string, cfg *Config) (*Session, error) {
	t := &dialTarget{network: network, addr: addr}
	conn, took, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	s, err := t.start(ctx, conn, took, cfg)
	var np *noPrefaceError
	if errors.As(err, &np) && t.probeTLS(ctx) {
		err = &notMuxrpcError{what: "the peer speaks TLS: dial with rpc.WithTLS (mux.DialTLS)"}
	}
	return s, err
}

// DialTLS connects to addr over TLS and starts the client side of a
// session on the connection. ctx bounds the dial and both handshakes;
// Config.HandshakeTimeout bounds the TLS handshake and the session's
// together, as it does on the server's side. As with tls.Dial, an empty
// tlsConfig.ServerName means the host in addr. tlsConfig must not offer
// "h2" by ALPN: a server that shares its port with gRPC takes a client
// that negotiates it for gRPC (PROTOCOL.md, section 20). A server that
// does not speak muxrpc over its TLS fails the handshake as it does for
// Dial; an HTTPS server is asked again, as an HTTP/1.x server is.
func DialTLS(ctx context.Context, network, addr string, tlsConfig *tls.Config, cfg *Config) (*Session, error) {
	if tlsConfig != nil && slices.Contains(tlsConfig.NextProtos, "h2") {
		return nil, errOffersH2
	}
	if tlsConfig == nil {
		tlsConfig = &tls.Config{}
	}
	if tlsConfig.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		tlsConfig = tlsConfig.Clone()
		tlsConfig.ServerName = host
	}
	t := &dialTarget{network: network, addr: addr, tls: tlsConfig}
	conn, took, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	// The session's handshake runs the TLS handshake, under its deadline.
	return t.start(ctx, conn, took, cfg)
}

// A dialTarget is the server Dial or DialTLS connects to.
type dialTarget struct {
	network, addr string
	tls           *tls.Config // nil without TLS
}

// connect opens a connection to the server, with TLS when t has it (the
// TLS handshake is left to the first read or write), and says how long
// connecting took: about a round trip.
func (t *dialTarget) connect(ctx context.Context) (net.Conn, time.Duration, error) {
	var d net.Dialer
	start := time.Now()
	conn, err := d.DialContext(ctx, t.network, t.addr)
	if err != nil {
		return nil, 0, err
	}
	took := time.Since(start)
	if t.tls != nil {
		return tls.Client(conn, t.tls), took, nil
	}
	return conn, took, nil
}

// start starts the client side of a session on conn, t's first
// connection, which took connectTook to connect. An HTTP/1.x server says
// nothing to a muxrpc preface: it waits for a request line, which a
// muxrpc client never sends. So when the handshake is still waiting after
// silence, start asks the server on a second connection with a preface
// that ends a line (probeHTTP), and ends the handshake at once if the
// server answers as HTTP does.
func (t *dialTarget) start(ctx context.Context, conn net.Conn, connectTook time.Duration, cfg *Config) (*Session, error) {
	hctx, cancel := context.WithCancelCause(ctx)
	probed := make(chan struct{})
	watch := time.AfterFunc(silence(connectTook), func() {
		defer close(probed)
		if err := t.probeHTTP(hctx); err != nil {
			cancel(err)
		}
	})
	s, err := newSession(hctx, conn, cfg, true)
	cancel(nil) // a probe still asking stops
	if !watch.Stop() {
		<-probed
	}
	var nm *notMuxrpcError
	if err != nil && ctx.Err() == nil && errors.As(context.Cause(hctx), &nm) {
		err = nm
	}
	return s, err
}

// silence is how long a server may say nothing before start asks it
// whether it speaks HTTP, for a connection that took connectTook to
// connect: long enough that a muxrpc server, whose preface follows the
// connection's establishment by about a round trip (two or three with
// TLS), is not asked.
func silence(connectTook time.Duration) time.Duration {
	return max(minSilence, 8*connectTook)
}

// minSilence is the least silence before start asks a server whether it
// speaks HTTP.
const minSilence = 200 * time.Millisecond
