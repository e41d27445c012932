package mux

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// What a handshake tells of a peer that does not speak this side's
// transport: from the first bytes it sent, what it speaks, and what to do
// about it.

// notMuxrpcError is the handshake's error for a peer whose first bytes are
// not this side's transport's. errors.Is(err, ErrNotMuxrpc) holds for it,
// and errors.Is(err, ErrTransportMismatch) when the peer speaks muxrpc's
// other transport.
type notMuxrpcError struct {
	what     string // what the peer speaks, and what to do; "" when unrecognised
	got      []byte // the peer's first bytes
	mismatch bool
}

func (e *notMuxrpcError) Error() string {
	if e.what == "" {
		return fmt.Sprintf("mux: handshake: %s: got %q", bareText(ErrNotMuxrpc), e.got)
	}
	if len(e.got) == 0 {
		return "mux: handshake: " + e.what
	}
	return fmt.Sprintf("mux: handshake: %s (its first bytes: %q)", e.what, e.got)
}

// Is reports whether target is ErrNotMuxrpc, or ErrTransportMismatch for
// a peer of muxrpc's other transport.
func (e *notMuxrpcError) Is(target error) bool {
	return target == ErrNotMuxrpc || e.mismatch && target == ErrTransportMismatch
}

// peerSpeaks returns the handshake's error for a peer whose first bytes,
// got, are not what transport tr expects, on the client side of the
// connection or the server's.
func peerSpeaks(got []byte, tr Transport, client bool) error {
	e := &notMuxrpcError{got: bytes.Clone(got)}
	switch {
	case tr == Native && looksLikeSmux(got):
		e.what, e.mismatch = "the peer speaks smux, not the native transport; set Config.Transport = mux.Smux on this side", true
	case tr == Smux && bytes.HasPrefix(got, prefaceMagic[:min(len(got), len(prefaceMagic))]) && len(got) >= 2:
		e.what, e.mismatch = "the peer speaks muxrpc's native transport, not smux; set Config.Transport = mux.Native on this side", true
	case looksLikeTLS(got) && client:
		e.what = "the peer speaks TLS: dial with rpc.WithTLS (mux.DialTLS)"
	case looksLikeTLS(got):
		e.what = "the peer speaks TLS: a client dialing with TLS a server without it"
	case bytes.HasPrefix(got, []byte("PRI * HT")):
		e.what = "the peer speaks HTTP/2: a gRPC client? (muxrpc and gRPC share a port only through rpc/grpcport)"
	case looksLikeHTTP2Frame(got):
		e.what = "the peer speaks HTTP/2: a gRPC server? (muxrpc and gRPC share a port only through rpc/grpcport)"
	case bytes.HasPrefix(got, []byte("HTTP/1.")):
		e.what = "the peer speaks HTTP/1.x: an HTTP server?"
	case looksLikeHTTPRequest(got):
		e.what = "the peer speaks HTTP/1.x: an HTTP client?"
	}
	return e
}

// looksLikeSmux reports whether b starts with a smux frame header: version
// 1 or 2, and a command smux knows (SYN, FIN, PSH, NOP, UPD).
func looksLikeSmux(b []byte) bool {
	return len(b) >= 2 && (b[0] == 1 || b[0] == 2) && b[1] <= 4
}

// looksLikeTLS reports whether b starts with a TLS record header: an
// alert or a handshake, of version 3.x.
func looksLikeTLS(b []byte) bool {
	return len(b) >= 2 && (b[0] == 0x15 || b[0] == 0x16) && b[1] == 3
}

// looksLikeHTTP2Frame reports whether b starts with the header of an
// HTTP/2 frame a server sends first, or before it hangs up: SETTINGS or
// GOAWAY, on stream 0.
func looksLikeHTTP2Frame(b []byte) bool {
	if len(b) < 8 || (b[3] != 0x4 && b[3] != 0x7) || b[5]&0x7f != 0 || b[6] != 0 || b[7] != 0 {
		return false
	}
	length := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	return length < 1<<14 && (b[3] != 0x4 || length%6 == 0)
}

// looksLikeHTTPRequest reports whether b starts as an HTTP/1.x request.
func looksLikeHTTPRequest(b []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT "} {
		if len(b) >= 4 && strings.HasPrefix(m, string(b[:min(len(b), len(m))])) {
			return true
		}
	}
	return false
}

// noPrefaceError is the handshake's error when the peer closed the
// connection before sending a byte: a TLS server does that to a client
// without TLS (see Dial's probe, probeTLS).
type noPrefaceError struct{ cause error }

func (e *noPrefaceError) Error() string {
	return "mux: handshake: the peer closed the connection before sending its preface: " + e.cause.Error()
}

func (e *noPrefaceError) Unwrap() error { return e.cause }

// closedBeforePreface returns the handshake's error for a read that got
// no byte and failed with err: a noPrefaceError when the peer ended the
// connection, else nil.
func closedBeforePreface(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return &noPrefaceError{err}
	}
	return nil
}

// bare is an error of this package whose text is reported after a "mux: "
// prefix of its own: its text drops its own prefix, so that the prefix
// appears once. errors.Is and errors.As see the error itself.
type bare struct{ err error }

func (b bare) Error() string { return bareText(b.err) }
func (b bare) Unwrap() error { return b.err }

func bareText(err error) string { return strings.TrimPrefix(err.Error(), "mux: ") }

// lingerClose lets a peer of muxrpc's other transport read what this side
// sent it, which tells it so, before the connection closes: closing with
// the peer's bytes unread would reset the connection, and the reset may
// destroy them before the peer reads them. It ends this side's writing and
// reads what the peer sends until it hangs up, for at most d.
func lingerClose(conn net.Conn, d time.Duration) {
	conn.SetDeadline(time.Now().Add(d))
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
}

// lingerFor is how long lingerClose waits, at most.
func lingerFor(c Config) time.Duration { return min(c.HandshakeTimeout, time.Second) }
