package mux

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Asking a silent server, on a second connection, what it speaks: Dial's
// probes. Each costs the server one connection, and its answer is kept
// for a minute, so that a client that redials does not double its
// connections.

// probeTimeout bounds one probe.
const probeTimeout = time.Second

// probeTLS reports whether the server speaks TLS. A TLS server hangs up
// on a muxrpc preface without a word, so when a server did so, Dial asks
// it again, with a TLS ClientHello this time, and looks at the first
// bytes of the answer: a TLS record.
func (t *dialTarget) probeTLS(ctx context.Context) bool {
	key := "tls " + t.network + " " + t.addr
	if yes, ok := probeAnswers.recall(key); ok {
		return yes
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, t.network, t.addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	host, _, _ := net.SplitHostPort(t.addr)
	if host == "" {
		host = "localhost"
	}
	fc := &firstRead{Conn: conn}
	// Only the answer's first bytes are read: the handshake fails there,
	// before any certificate is looked at.
	tls.Client(fc, &tls.Config{ServerName: host}).HandshakeContext(ctx)
	isTLS := looksLikeTLS(fc.got)
	probeAnswers.remember(key, isTLS)
	return isTLS
}

// firstRead is a connection that reads once: it keeps the bytes, and
// fails every later read.
type firstRead struct {
	net.Conn
	got []byte
}

var errProbed = errors.New("mux: probed")

func (c *firstRead) Read(p []byte) (int, error) {
	if c.got != nil {
		return 0, errProbed
	}
	n, err := c.Conn.Read(p)
	c.got = append([]byte{}, p[:n]...)
	return n, err
}

// httpProbe is what probeHTTP sends: a muxrpc preface that ends a line.
// A muxrpc server, and a port shared with gRPC (PROTOCOL.md, section 20),
// take it for a muxrpc client's preface and answer with their own; an
// HTTP/1.x server takes it for a malformed request line and answers with
// an error response.
var httpProbe = append(appendPreface(nil), "\r\n\r\n"...)

// probeHTTP returns the handshake's error for a server that speaks
// HTTP/1.x, which it learns by sending the server httpProbe on a second
// connection (over TLS when t has it) and reading the first bytes of the
// answer; nil when the server answers otherwise, or not at all.
func (t *dialTarget) probeHTTP(ctx context.Context) error {
	key := "http " + t.network + " " + t.addr
	if t.tls != nil {
		key = "https " + t.network + " " + t.addr
	}
	yes, ok := probeAnswers.recall(key)
	if !ok {
		yes, ok = t.askHTTP(ctx)
		if !ok {
			return nil // cut short: nothing learned
		}
		probeAnswers.remember(key, yes)
	}
	if !yes {
		return nil
	}
	scheme := "an HTTP server?"
	if t.tls != nil {
		scheme = "an HTTPS server?"
	}
	return &notMuxrpcError{what: "the peer speaks HTTP/1.x: " + scheme +
		" (it says nothing to a muxrpc preface until a line ends)"}
}

// askHTTP sends the server httpProbe and reports whether the answer is
// HTTP/1.x; ok is false when ctx ended first. A server that has not
// answered within probeTimeout is no HTTP server.
func (t *dialTarget) askHTTP(ctx context.Context) (isHTTP, ok bool) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, _, err := t.connect(pctx)
	if err != nil {
		return false, ctx.Err() == nil
	}
	defer conn.Close()
	stop := context.AfterFunc(pctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(httpProbe); err != nil {
		return false, ctx.Err() == nil
	}
	var answer [len("HTTP/1.")]byte
	n, _ := io.ReadFull(conn, answer[:])
	if n < len(answer) && ctx.Err() != nil {
		return false, false
	}
	return bytes.Equal(answer[:n], []byte("HTTP/1.")), true
}

// probeAnswers keeps the probes' recent answers.
var probeAnswers probeMemory

// probeMemory remembers, for a minute, what probes learned, by probe and
// server. It holds at most 256 answers: when full, it forgets them all.
type probeMemory struct {
	mu sync.Mutex
	m  map[string]probeAnswer
}

type probeAnswer struct {
	yes bool
	at  time.Time
}

// recall returns the answer for key, if one less than a minute old is
// kept.
func (pm *probeMemory) recall(key string) (yes, ok bool) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	a, ok := pm.m[key]
	if !ok || time.Since(a.at) >= time.Minute {
		return false, false
	}
	return a.yes, true
}

// remember keeps the answer for key.
func (pm *probeMemory) remember(key string, yes bool) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.m == nil || len(pm.m) >= 256 {
		pm.m = make(map[string]probeAnswer)
	}
	pm.m[key] = probeAnswer{yes, time.Now()}
}
