package mux

import (
	"errors"
	"fmt"
	"net"
)

// Errors a session or stream reports. Test for them with errors.Is.
var (
	// ErrRefused marks a stream the peer never processed: refused over its
	// stream limit, opened after a GoAway, or never sent before the session
	// ended. Such a stream is safe to retry, on this session or another.
	ErrRefused = errors.New("mux: stream refused, never processed")

	// ErrGoAway marks errors caused by a GoAway; the error is a *GoAwayError.
	ErrGoAway = errors.New("mux: session is going away")

	// ErrSessionClosed is reported after Close or Kill on this side.
	ErrSessionClosed = fmt.Errorf("mux: session closed: %w", net.ErrClosed)

	// ErrIdleTimeout is the session's error when Config.IdleTimeout ended
	// it: a Close by this side, so it is also ErrSessionClosed.
	ErrIdleTimeout = fmt.Errorf("%w: idle timeout", ErrSessionClosed)

	// ErrStreamClosed is reported by a stream after its own Close.
	ErrStreamClosed = fmt.Errorf("mux: stream closed: %w", net.ErrClosed)

	// ErrWriteClosed is reported by Write after CloseWrite.
	ErrWriteClosed = errors.New("mux: write after CloseWrite")

	// ErrKeepAliveTimeout is the session's error when the peer stopped
	// answering: nothing was received, or nothing could be sent, for
	// Config.KeepAliveTimeout.
	ErrKeepAliveTimeout = errors.New("mux: keepalive timeout, peer is not responding")

	// ErrProtocol marks a peer that broke the protocol; the session ends.
	ErrProtocol = errors.New("mux: protocol error")

	// ErrNotMuxrpc is the handshake's error when the peer's first bytes are
	// not a muxrpc preface, or not the one of this side's transport. The
	// error's text says what the peer speaks when its bytes tell: muxrpc's
	// other transport (then errors.Is(err, ErrTransportMismatch) holds
	// too), TLS, HTTP/1.x or HTTP/2 (gRPC).
	ErrNotMuxrpc = errors.New("mux: peer is not a muxrpc peer")

	// ErrTransportMismatch is the handshake's error, on either side, when
	// the peer speaks muxrpc's other transport (Config.Transport): Smux to
	// a Native side, or Native to a Smux side. Such an error is also
	// ErrNotMuxrpc, and says which Transport to set.
	ErrTransportMismatch = errors.New("mux: the peer speaks muxrpc's other transport")

	// ErrVersion is the handshake's error when the peer speaks another
	// protocol version.
	ErrVersion = errors.New("mux: unsupported protocol version")

	// ErrUnsupported is returned by methods the selected transport cannot
	// provide (see Transport).
	ErrUnsupported = errors.New("mux: not supported by this transport")

	// ErrStreamIDsExhausted is reported by Open when this side has used all
	// its stream ids (about 2^30) of the session; open a new session.
	ErrStreamIDsExhausted = fmt.Errorf("%w: stream ids exhausted", ErrRefused)
)

// Reset codes with a meaning defined by the protocol. Applications may use
// any other code; codes below 0x100 are reserved for the protocol.
const (
	ResetCancel      uint32 = 0x0 // the stream was abandoned: closed before the peer finished sending
	ResetRefused     uint32 = 0x1 // the stream was never processed; safe to retry
	ResetFlowControl uint32 = 0x2 // the peer sent more than the stream's window
	ResetInternal    uint32 = 0x3 // the implementation failed
)

// GoAway codes with a meaning defined by the protocol.
const (
	GoAwayNormal        uint32 = 0x0 // orderly shutdown
	GoAwayProtocolError uint32 = 0x1 // the peer broke the protocol
	GoAwayInternal      uint32 = 0x2 // the implementation failed
)

// ResetError is the error of a stream that was reset, locally by Reset or by
// the peer. errors.Is(err, ErrRefused) holds when the code is ResetRefused.
type ResetError struct {
	Code   uint32
	Remote bool // the peer reset the stream
}

// Error says who reset the stream, and with which code.
func (e *ResetError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	switch e.Code {
	case ResetRefused:
		return "mux: stream refused " + who + ", never processed"
	case ResetCancel:
		return "mux: stream cancelled " + who
	}
	return fmt.Sprintf("mux: stream reset %s with code %#x", who, e.Code)
}

// Is reports whether the reset means the stream was never processed.
func (e *ResetError) Is(target error) bool {
	return target == ErrRefused && e.Code == ResetRefused
}

// GoAwayError describes a GoAway: the peer's (Remote) or this side's.
// errors.Is(err, ErrGoAway) holds for it.
type GoAwayError struct {
	Code         uint32
	Debug        []byte
	LastStreamID uint32 // the highest stream id the sender had seen; later ones were never processed
	Remote       bool
}

// Error says which side sent the GoAway, its code and its debug data.
func (e *GoAwayError) Error() string {
	who := "sent"
	if e.Remote {
		who = "received"
	}
	if len(e.Debug) > 0 {
		return fmt.Sprintf("mux: GoAway %s, code %#x: %s", who, e.Code, e.Debug)
	}
	return fmt.Sprintf("mux: GoAway %s, code %#x", who, e.Code)
}

// Is reports whether target is ErrGoAway.
func (e *GoAwayError) Is(target error) bool { return target == ErrGoAway }

// IsRetrySafe reports whether err proves that the peer never processed the
// stream, so that the same request can be sent again without risk of doing
// its work twice. Any other error means the stream may have been processed.
func IsRetrySafe(err error) bool { return errors.Is(err, ErrRefused) }

// refusedBy wraps cause as a retry-safe error.
func refusedBy(cause error) error {
	if cause == nil || errors.Is(cause, ErrRefused) {
		return cause
	}
	return fmt.Errorf("%w: %w", ErrRefused, bare{cause})
}

// errOffersH2 is DialTLS's error for a TLS configuration that offers
// HTTP/2 by ALPN.
var errOffersH2 = errors.New(`mux: the TLS configuration offers ALPN "h2", which a port shared with gRPC takes for gRPC; leave it out of NextProtos`)
