package rpc

import (
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/resolver"
)

// A Balancer is how a Client spreads calls over its servers' sessions.
type Balancer int

const (
	// PickFirst keeps one session, to the first of the resolver's
	// addresses that takes one, trying them in order, as gRPC's default
	// pick_first does: the next address's attempt starts when the one
	// before fails, or after 250 ms without an answer (Happy Eyeballs).
	// It is the default.
	PickFirst Balancer = iota
	// RoundRobin keeps a session to every address and sends each call to
	// the next ready one in turn, as gRPC's round_robin does.
	RoundRobin
	// LeastOutstanding keeps a session to every address and sends each
	// call to the less busy of two ready sessions chosen at random (the
	// power of two choices), counting the calls each has in flight: where
	// one session can carry any number of calls, this keeps a slow server
	// from collecting them.
	LeastOutstanding
)

// String returns the balancer's name.
func (b Balancer) String() string {
	switch b {
	case PickFirst:
		return "pick_first"
	case RoundRobin:
		return "round_robin"
	case LeastOutstanding:
		return "least_outstanding"
	}
	return "Balancer(" + strconv.Itoa(int(b)) + ")"
}

// WithBalancer sets how a Client spreads its calls; PickFirst by default.
// Dial and NewPeer, which make one session, ignore it.
func WithBalancer(b Balancer) DialOption {
	return dialOption(func(c *peerConfig) { c.client.balancer = b })
}

// ConnectParams set how a Client connects, as gRPC's ConnectParams do:
// after a failed attempt to reach an address it waits
// Backoff.BaseDelay, then Multiplier times longer after each further
// failure up to MaxDelay, each wait varied at random by ±Jitter; each
// attempt has at least MinConnectTimeout to finish (dial and handshake).
type ConnectParams struct {
	Backoff           backoff.Config
	MinConnectTimeout time.Duration
}

// DefaultConnectParams are gRPC's: backoff from 1 s by 1.6 up to 120 s,
// ±20% jitter, and 20 s per attempt.
var DefaultConnectParams = ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: 20 * time.Second}

// WithConnectParams sets how a Client connects and backs off; fields left
// zero keep DefaultConnectParams' values. Dial and NewPeer ignore it.
func WithConnectParams(p ConnectParams) DialOption {
	return dialOption(func(c *peerConfig) { c.client.connect = p })
}

// WithHealthCheck makes a Client balance only over sessions whose server
// reports serving, as check watches it (rpc/health's Check watches the
// standard grpc.health.v1.Health service). Dial and NewPeer ignore it.
func WithHealthCheck(check HealthCheck) DialOption {
	return dialOption(func(c *peerConfig) { c.client.health = check })
}

// WithResolvers gives a Client resolvers for its target's scheme, taking
// precedence over this package's own (dns, unix, passthrough, static)
// and over those registered with resolver.Register: etcd's naming
// resolver, say. Dial and NewPeer ignore it.
func WithResolvers(b ...resolver.Builder) DialOption {
	return dialOption(func(c *peerConfig) { c.client.resolvers = append(c.client.resolvers, b...) })
}

// WaitForReady makes a call through a Client wait, until its context
// ends, for a session to be ready, rather than fail at once with
// Unavailable while the Client's connections fail (TransientFailure), as
// gRPC's WaitForReady does. A call through a Directory's NamedConn or
// Fleet waits so for a peer to join, rather than fail at once while none
// is connected. A call on a Peer, which has one session, ignores it.
func WaitForReady(wait bool) CallOption { return waitForReady(wait) }

// waitForReady is WaitForReady's option: a type of its own, so that a
// Client finds it among a call's options before it picks a session.
type waitForReady bool

// waitsForReady reports whether opts ask the call to wait for a ready
// session.
func waitsForReady(opts []CallOption) bool {
	wait := false
	for _, o := range opts {
		if w, ok := o.(waitForReady); ok {
			wait = bool(w)
		} else if w, ok := grpcWaitForReady(o); ok {
			wait = w
		}
	}
	return wait
}

// clientParams is what the Client's own options set.
type clientParams struct {
	balancer  Balancer
	connect   ConnectParams
	health    HealthCheck
	resolvers []resolver.Builder
}

// withDefaults fills what the options left zero.
func (p clientParams) withDefaults() clientParams {
	d, b := DefaultConnectParams, &p.connect.Backoff
	if b.BaseDelay <= 0 {
		b.BaseDelay = d.Backoff.BaseDelay
	}
	if b.Multiplier < 1 {
		b.Multiplier = d.Backoff.Multiplier
	}
	if b.Jitter <= 0 || b.Jitter > 1 {
		b.Jitter = d.Backoff.Jitter
	}
	if b.MaxDelay <= 0 {
		b.MaxDelay = d.Backoff.MaxDelay
	}
	b.MaxDelay = max(b.MaxDelay, b.BaseDelay)
	if p.connect.MinConnectTimeout <= 0 {
		p.connect.MinConnectTimeout = d.MinConnectTimeout
	}
	return p
}

// backoff is how long to wait after the failures-th failure in a row
// (counting from 0).
func (p *clientParams) backoff(failures int) time.Duration {
	b := p.connect.Backoff
	d := float64(b.BaseDelay) * math.Pow(b.Multiplier, float64(failures))
	d = min(d, float64(b.MaxDelay))
	d *= 1 + b.Jitter*(2*rand.Float64()-1)
	return time.Duration(d)
}
