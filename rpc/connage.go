package rpc

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// Connection management at the server, as gRPC's
// keepalive.ServerParameters: a Server ends its sessions when they grow
// old or idle, so that long-lived clients reconnect, and spread over the
// servers there are now, instead of staying on those they found first.

// MaxConnectionAge ends each session the Server serves (from Serve,
// ServeConn or ServeSession) gracefully once it is about d old: d plus
// or minus up to 10%, at random for each session, so that the clients of
// a fleet do not all reconnect at once. The Server then sends a GoAway
// (mux.GoAwayNormal, debug data "max connection age"), so that the client
// opens no new call on the session and makes its next calls over another,
// waits for the calls in flight in both directions to finish (for at
// most MaxConnectionAgeGrace), and closes the session. This is how the
// sessions of long-lived clients rebalance when servers are added behind
// a load balancer or a name.
//
// On the Smux transport, which has no GoAway, the client is not told: the
// Server waits for a moment with no call in flight (the client may make
// new calls meanwhile), for at most the grace, and then closes the
// session; a call that races the close fails Unavailable.
//
// Default 0: sessions never age out; a negative d is the same.
func MaxConnectionAge(d time.Duration) ServerOption {
	return serverOption(func(c *serverConfig) { c.maxAge = d })
}

// MaxConnectionAgeGrace bounds how long a session that MaxConnectionAge
// ended waits, after its GoAway, for its calls in flight: after d the
// Server closes it at once, as Stop does, so that the calls still running
// fail (Unavailable at the client; the Server's own calls back with
// Canceled and ErrConnClosing) and their handlers' contexts are
// cancelled. Default 0: the calls may take however long they take; a
// negative d is the same.
func MaxConnectionAgeGrace(d time.Duration) ServerOption {
	return serverOption(func(c *serverConfig) { c.maxAgeGrace = d })
}

// MaxConnectionIdle ends a session once no call has been in flight on it,
// in either direction, for d: the client gets a GoAway with the debug
// data "idle timeout" (on the Smux transport its connection closes), and
// the session's Err is mux.ErrIdleTimeout. It sets
// mux.Config.IdleTimeout for the sessions the Server makes, in Serve and
// ServeConn, whichever order it and MuxConfig come in; a session given to
// ServeSession keeps the IdleTimeout it was made with. Idle sessions are
// those a client keeps for calls that no longer come; ending them
// releases what they hold and lets their clients reconnect, perhaps to
// another server. Default 0: the MuxConfig's IdleTimeout, itself off by
// default; a negative d is an invalid configuration, which Serve and
// ServeConn refuse.
func MaxConnectionIdle(d time.Duration) ServerOption {
	return serverOption(func(c *serverConfig) { c.peer.maxIdle = d })
}

// maxAgeDebug is the debug data of the GoAway that ends an old session.
const maxAgeDebug = "max connection age"

// jitter returns d plus or minus up to a tenth of it, at random. An age
// too long to jitter without overflow (over 130 years) is left as it is.
func jitter(d time.Duration) time.Duration {
	if d > math.MaxInt64/2 {
		return d
	}
	return d - d/10 + rand.N(d/5+1)
}

// watchAge starts the timer that ends p at its age, if the Server has a
// MaxConnectionAge, and returns the function that stops it. The timer is
// the session's only one: ServeSession stops it once the session has
// ended, and stop returns only once an age shutdown that had begun has
// returned too, so that nothing of the session outlives ServeSession.
func (s *Server) watchAge(p *Peer) (stop func()) {
	if s.cfg.maxAge <= 0 {
		return func() {}
	}
	aged := make(chan struct{}) // closed when the age shutdown has returned
	timer := time.AfterFunc(jitter(s.cfg.maxAge), func() {
		defer close(aged)
		s.ageOut(p)
	})
	return func() {
		if !timer.Stop() {
			<-aged
		}
	}
}

// ageOut ends p because it is old: a GoAway saying so, the calls in
// flight awaited for at most MaxConnectionAgeGrace, then the session's
// Close, or, once the grace has run out, its end at once. A Stop or
// GracefulStop meanwhile ends the session as it does any other.
func (s *Server) ageOut(p *Peer) {
	ctx := context.Background()
	if grace := s.cfg.maxAgeGrace; grace > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, grace)
		defer cancel()
	}
	p.shutdownWithin(ctx, []byte(maxAgeDebug))
}
