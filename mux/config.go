package mux

import (
	"fmt"
	"time"
)

// Transport selects the framing a session speaks on its connection.
type Transport int

const (
	// Native is muxrpc's own framing, described in PROTOCOL.md: the default.
	Native Transport = iota

	// Smux speaks github.com/xtaci/smux protocol version 2, for peers that
	// already do (for example over KCP). It lacks what smux lacks:
	//   - Reset, GoAway, Ping and CloseWrite return ErrUnsupported;
	//   - Stream.OnAbort fires when the peer closes the stream, which
	//     smux cannot tell from an abort;
	//   - there is no connection preface: the handshake is each side's
	//     settings stream, and a peer that is not muxrpc over smux is
	//     noticed by what it sends instead, or by the handshake timeout;
	//   - every stream starts with smux's fixed 256 KiB send window; a
	//     smaller StreamWindow applies only after the receiver's first Read.
	//   - a Write that fails at its deadline may still deliver what smux
	//     had queued of it, once the connection drains.
	Smux
)

// String returns the transport's name: "native" or "smux".
func (t Transport) String() string {
	switch t {
	case Native:
		return "native"
	case Smux:
		return "smux"
	}
	return fmt.Sprintf("Transport(%d)", int(t))
}

const (
	defaultMaxIncomingStreams = 1000
	defaultStreamWindow       = 256 << 10
	defaultMaxFrameSize       = 64 << 10
	minFrameSize              = 1 << 10
	minStreamWindow           = 1 << 10
	defaultKeepAliveInterval  = 15 * time.Second
	defaultKeepAliveTimeout   = 45 * time.Second
	defaultHandshakeTimeout   = 10 * time.Second
	defaultCloseTimeout       = 5 * time.Second
)

// Config tunes a session. The zero value of each field means its default,
// so a nil *Config is the defaults. Both peers may use different values.
type Config struct {
	// Transport selects the framing; Native by default.
	Transport Transport

	// MaxIncomingStreams bounds the streams the peer may have open toward
	// this side at once, counting those not yet accepted. The peer learns the
	// limit in the handshake: its Open waits for a free slot, and streams
	// over the limit are refused (ErrRefused). It also bounds the peer's
	// streams the application has at once: accepted and not yet closed, or
	// served by a HandleType handler that has not returned, even if the peer
	// has reset them. Streams beyond that wait in a queue of twice the limit,
	// and are refused when it is full. Default 1000.
	MaxIncomingStreams int

	// StreamWindow is how many bytes the peer may send on one stream before
	// this side's application reads them. A session buffers at most
	// StreamWindow bytes per open stream. Default 256 KiB, minimum 1 KiB.
	StreamWindow int

	// MaxFrameSize is the largest frame payload this side accepts.
	// Default 64 KiB; from 1 KiB to 16 MiB-1.
	MaxFrameSize int

	// KeepAliveInterval is how long the session may be idle before it pings
	// the peer. Default 15s; negative turns keepalive off.
	KeepAliveInterval time.Duration

	// KeepAliveTimeout ends the session when nothing has been received from
	// the peer, or a write has made no progress, for this long; bytes that
	// leave a congested connection, proving that the peer reads, count as
	// hearing from it. Default 45s; it must exceed KeepAliveInterval.
	KeepAliveTimeout time.Duration

	// HandshakeTimeout bounds the exchange of prefaces when a session
	// starts, together with the TLS handshake before it on a TLS
	// connection (DialTLS, ListenTLS, or a tls.Conn given to Client or
	// Server that has not done its handshake yet). Default 10s.
	HandshakeTimeout time.Duration

	// CloseTimeout bounds how long Close waits for open streams to finish
	// after its GoAway. Default 5s.
	CloseTimeout time.Duration

	// IdleTimeout ends the session, as Close does, once no stream has been
	// open in either direction for this long: the peer gets a GoAway with
	// the debug data "idle timeout" (on the Smux transport, its connection
	// closes), and the session's Err is ErrIdleTimeout. Default 0: never,
	// since a session kept for calls back is idle between them, and
	// keepalive ends a session whose peer is gone whatever this says. Set
	// it on a server that many clients connect to and then leave idle.
	IdleTimeout time.Duration

	// MaxPendingHandshakes bounds the connections a Listener has in their
	// handshake at once: when another arrives, the Listener closes the
	// oldest of them (see Listener). Raise it for a server that many
	// clients reconnect to at once, each handshake costing a goroutine, the
	// connection and its TLS state meanwhile. Only a Listener uses it.
	// Default 1024.
	MaxPendingHandshakes int
}

// withDefaults returns a copy of c with defaults filled in, or an error that
// names the first invalid field.
func (c *Config) withDefaults() (Config, error) {
	var out Config
	if c != nil {
		out = *c
	}
	setDefault(&out.MaxIncomingStreams, defaultMaxIncomingStreams)
	setDefault(&out.StreamWindow, defaultStreamWindow)
	setDefault(&out.MaxFrameSize, defaultMaxFrameSize)
	setDefault(&out.KeepAliveInterval, defaultKeepAliveInterval)
	setDefault(&out.KeepAliveTimeout, defaultKeepAliveTimeout)
	setDefault(&out.HandshakeTimeout, defaultHandshakeTimeout)
	setDefault(&out.CloseTimeout, defaultCloseTimeout)
	setDefault(&out.MaxPendingHandshakes, maxHandshakes)
	switch {
	case out.Transport != Native && out.Transport != Smux:
		return out, fmt.Errorf("mux: config: unknown Transport %d", int(out.Transport))
	case out.MaxIncomingStreams < 0 || out.MaxIncomingStreams > maxStreamID:
		return out, fmt.Errorf("mux: config: MaxIncomingStreams %d out of range [1, 2^31-1]", out.MaxIncomingStreams)
	case out.StreamWindow < minStreamWindow || out.StreamWindow > maxWindow:
		return out, fmt.Errorf("mux: config: StreamWindow %d out of range [1 KiB, 2^31-1]", out.StreamWindow)
	case out.MaxFrameSize < minFrameSize || out.MaxFrameSize > maxFramePayload:
		return out, fmt.Errorf("mux: config: MaxFrameSize %d out of range [1 KiB, 16 MiB-1]", out.MaxFrameSize)
	case out.KeepAliveInterval > 0 && out.KeepAliveTimeout <= out.KeepAliveInterval:
		return out, fmt.Errorf("mux: config: KeepAliveTimeout %v must exceed KeepAliveInterval %v", out.KeepAliveTimeout, out.KeepAliveInterval)
	case out.HandshakeTimeout < 0:
		return out, fmt.Errorf("mux: config: negative HandshakeTimeout %v", out.HandshakeTimeout)
	case out.CloseTimeout < 0:
		return out, fmt.Errorf("mux: config: negative CloseTimeout %v", out.CloseTimeout)
	case out.IdleTimeout < 0:
		return out, fmt.Errorf("mux: config: negative IdleTimeout %v", out.IdleTimeout)
	case out.MaxPendingHandshakes < 0:
		return out, fmt.Errorf("mux: config: negative MaxPendingHandshakes %d", out.MaxPendingHandshakes)
	}
	return out, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}
