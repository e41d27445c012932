package mux

import "time"

// SessionStats is a snapshot of a session, for an operator: see
// [Session.Stats].
type SessionStats struct {
	// Transport is the framing the session speaks.
	Transport Transport

	// Started is when the session was made: when Client, Server, Dial or
	// a Listener's Accept began its handshake.
	Started time.Time

	// StreamsOpen is the number of open streams in both directions, as
	// NumStreams counts them.
	StreamsOpen int

	// BytesSent and BytesReceived count the bytes written to and read
	// from the session's connection since it was made, the handshake and
	// all framing included: on a plain TCP or Unix connection, what the
	// two sides' counters say of each other matches exactly once the
	// session is idle (one side's BytesSent is the other's
	// BytesReceived). On a TLS connection they count the bytes through
	// the *tls.Conn, framing included but not TLS's own records.
	BytesSent     uint64
	BytesReceived uint64

	// LastRTT is the round trip of the last ping answered: keepalive's,
	// sent after KeepAliveInterval without traffic, or Ping's. It is 0
	// until one has been answered, and always on the Smux transport,
	// whose keepalive (smux's NOP frames) is never answered.
	LastRTT time.Duration
}

// Stats returns a snapshot of the session's counters. It is cheap, and
// safe to call at any time, also after the session has ended (the counts
// then stay as they were at its end, StreamsOpen aside). The byte
// counters cost the session one atomic addition per read or write of
// the connection, not one per frame.
func (s *Session) Stats() SessionStats {
	return SessionStats{
		Transport:     s.cfg.Transport,
		Started:       s.started,
		StreamsOpen:   s.NumStreams(),
		BytesSent:     s.bytesSent.Load(),
		BytesReceived: s.bytesRecv.Load(),
		LastRTT:       time.Duration(s.lastRTT.Load()),
	}
}
