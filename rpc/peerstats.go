package rpc

import (
	"crypto/tls"
	"net"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/credentials"
)

// PeerStats is a snapshot of a Peer, for an operator: who the other side
// is, how it is connected, and what the session carries now. See
// [Peer.Stats].
type PeerStats struct {
	// RemoteAddr is the other side's address.
	RemoteAddr net.Addr
	// Identity is who the other side is, as [Peer.Identity] says: on a
	// Server's side what its Authenticator established, the zero Identity
	// on the dialing side.
	Identity Identity
	// TLS is the session's TLS state, nil on a connection without TLS.
	TLS *tls.ConnectionState
	// Transport is the session's framing.
	Transport mux.Transport
	// Started is when the session began (see mux.SessionStats).
	Started time.Time
	// StreamsOpen counts the session's open streams in both directions:
	// the calls' and those of other protocols on the session.
	StreamsOpen int
	// CallsOut counts the calls in flight that this side made: an Invoke
	// until it returns, a stream until it ends.
	CallsOut int
	// CallsIn counts the calls in flight that this side serves: the
	// handlers running for the other side's calls.
	CallsIn int
	// BytesSent and BytesReceived count the bytes written to and read
	// from the session's connection, framing included (see
	// mux.SessionStats).
	BytesSent, BytesReceived uint64
	// LastRTT is the round trip of the last ping answered (keepalive's,
	// or one of mux.Session.Ping), 0 until one has been, and always on
	// the Smux transport (see mux.SessionStats).
	LastRTT time.Duration
}

// Stats returns a snapshot of the Peer: its session's counters and the
// calls in flight each way, read from the counters the Peer keeps anyway,
// so that calls pay nothing for it. It is safe to call at any time, also
// once the session has ended. A Server's [Server.Peers] and Stats on each
// is what an operator asks of a server's peers; package rpc/peermetrics
// exports them to Prometheus.
func (p *Peer) Stats() PeerStats {
	ss := p.sess.Stats()
	st := PeerStats{
		RemoteAddr:    p.info.Addr,
		Identity:      p.Identity(),
		Transport:     ss.Transport,
		Started:       ss.Started,
		StreamsOpen:   ss.StreamsOpen,
		CallsOut:      int(p.outgoing.Load()),
		BytesSent:     ss.BytesSent,
		BytesReceived: ss.BytesReceived,
		LastRTT:       ss.LastRTT,
	}
	if ti, ok := p.info.AuthInfo.(credentials.TLSInfo); ok {
		state := ti.State
		st.TLS = &state
	}
	p.mu.Lock()
	st.CallsIn = p.active
	p.mu.Unlock()
	return st
}
