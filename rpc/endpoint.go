package rpc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
)

// An endpoint is one place a Client keeps a session to: one of the
// resolver's addresses (or endpoints), or under PickFirst all of them,
// tried in order. Its goroutine connects, serves the session until the
// session goes away, and connects again, with backoff after failures.
type endpoint struct {
	c      *Client
	key    string
	ctx    context.Context // ends when the resolver drops the endpoint or the Client closes
	cancel context.CancelFunc

	// Guarded by c.mu.
	addrs   []resolver.Address
	state   connectivity.State
	session *Peer  // the session up now, nil while none is
	addr    string // the address session went to
	serving bool   // the health check's latest report on session; true without one
}

// run is the endpoint's goroutine.
func (e *endpoint) run() {
	c := e.c
	defer c.wg.Done()
	failures := 0
	for {
		c.endpointConnecting(e)
		p, addr, err := e.connect()
		if err != nil {
			if e.ctx.Err() != nil {
				return
			}
			c.endpointFailed(e, err)
			c.resolveNow()
			if !sleep(e.ctx, c.params.backoff(failures)) {
				return
			}
			failures++
			continue
		}
		began := time.Now()
		e.serve(p, addr)
		if e.ctx.Err() != nil {
			return
		}
		c.resolveNow()
		if time.Since(began) >= c.params.connect.Backoff.BaseDelay {
			failures = 0
			continue
		}
		// A session that ends as soon as it starts counts as a failed
		// attempt, so that a server that accepts and leaves at once cannot
		// make the Client reconnect in a loop.
		if !sleep(e.ctx, c.params.backoff(failures)) {
			return
		}
		failures++
	}
}

// connect opens a session to the first of the endpoint's addresses that
// takes one. As gRPC's pick_first does (Happy Eyeballs, RFC 8305), it
// starts the next address's attempt once the one before has neither
// succeeded nor failed within connectStagger, or at once when it fails,
// so that an address that swallows connections costs a quarter of a
// second rather than a MinConnectTimeout; the first session up wins, and
// the others are closed. Each attempt has MinConnectTimeout.
func (e *endpoint) connect() (*Peer, string, error) {
	c := e.c
	c.mu.Lock()
	addrs := e.addrs
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(e.ctx) // ends the attempts that lost
	defer cancel()
	type attempt struct {
		peer *Peer
		addr string
		err  error
	}
	results := make(chan attempt, len(addrs))
	started, pending := 0, 0
	startNext := func() {
		a := addrs[started]
		started++
		pending++
		go func() {
			actx, stop := context.WithTimeout(ctx, c.params.connect.MinConnectTimeout)
			defer stop()
			p, err := c.connectTo(actx, a)
			results <- attempt{p, a.Addr, err}
		}()
	}
	stagger := time.NewTimer(connectStagger)
	defer stagger.Stop()
	var won *attempt
	var errs []error
	for startNext(); pending > 0; {
		select {
		case r := <-results:
			pending--
			switch {
			case r.err == nil && won == nil:
				won = &r
				cancel()
			case r.err == nil:
				r.peer.kill() // up too late
			case won == nil:
				errs = append(errs, fmt.Errorf("connecting to %s: %w", r.addr, r.err))
				if started < len(addrs) && e.ctx.Err() == nil {
					startNext()
					stagger.Reset(connectStagger)
				}
			}
		case <-stagger.C:
			if won == nil && started < len(addrs) {
				startNext()
				stagger.Reset(connectStagger)
			}
		}
	}
	if won != nil {
		return won.peer, won.addr, nil
	}
	if err := e.ctx.Err(); err != nil {
		return nil, "", err
	}
	return nil, "", errors.Join(errs...)
}

// connectStagger is how long connect gives an address before it tries the
// next one beside it: RFC 8305's recommended Connection Attempt Delay,
// and gRPC's.
const connectStagger = 250 * time.Millisecond

// connectTo opens a session to a and has the server admit it.
func (c *Client) connectTo(ctx context.Context, a resolver.Address) (*Peer, error) {
	sess, err := c.dial(ctx, a)
	if err != nil {
		return nil, err
	}
	p := newPeer(sess, c.cfg)
	if err := p.greet(ctx); err != nil {
		p.wait()
		return nil, err
	}
	return p, nil
}

// dial opens a session to a, over TLS if the Client has WithTLS: verified
// against the address's server name, else WithTLS's, else the name the
// target resolved.
func (c *Client) dial(ctx context.Context, a resolver.Address) (*mux.Session, error) {
	network, addr := "tcp", a.Addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
	}
	if c.cfg.tls == nil {
		return mux.Dial(ctx, network, addr, c.cfg.muxConfig())
	}
	tc := c.cfg.tls
	if name := cmp.Or(a.ServerName, tc.ServerName, c.authority); name != tc.ServerName {
		tc = tc.Clone()
		tc.ServerName = name
	}
	return mux.DialTLS(ctx, network, addr, tc, c.cfg.muxConfig())
}

// serve makes p the endpoint's session until p goes away or the endpoint
// stops, then retires it.
func (e *endpoint) serve(p *Peer, addr string) {
	c := e.c
	c.endpointUp(e, p, addr)
	if c.params.health != nil {
		ctx, stop := context.WithCancel(e.ctx)
		defer stop() // after retire has begun: the watch is a call, and Shutdown waits for it
		c.wg.Add(1)
		go e.watchHealth(ctx, p)
	}
	select {
	case <-p.sess.Draining():
	case <-e.ctx.Done():
	}
	c.endpointDown(e, p)
	c.retire(p)
}

// watchHealth runs the Client's HealthCheck on p until ctx ends, again
// after a backoff each time it fails.
func (e *endpoint) watchHealth(ctx context.Context, p *Peer) {
	c := e.c
	defer c.wg.Done()
	report := func(serving bool) { c.endpointServing(e, p, serving, nil) }
	for failures := 0; ; failures++ {
		err := c.params.health(ctx, p, report)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the watch ended")
		}
		c.endpointServing(e, p, false, fmt.Errorf("health check of %s: %w", p.RemoteAddr(), err))
		if !sleep(ctx, c.params.backoff(failures)) {
			return
		}
	}
}

// sleep waits for d, or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// The endpoint moves through its states only by these, which also update
// the Client's ready set and state.

// endpointConnecting records that e is connecting. An endpoint whose
// last attempt failed stays in TransientFailure while it tries again, as
// gRPC's do, so that fail-fast calls keep failing at once rather than
// wait for an attempt that may hang until its timeout.
func (c *Client) endpointConnecting(e *endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.state != connectivity.TransientFailure {
		e.state = connectivity.Connecting
		c.updateLocked()
	}
}

// endpointFailed records that e's attempt to connect failed with err.
func (c *Client) endpointFailed(e *endpoint, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.state = connectivity.TransientFailure
	c.lastErr = err
	c.updateLocked()
}

// endpointUp records p as e's session: ready for calls, or, with a health
// check, once the check reports serving.
func (c *Client) endpointUp(e *endpoint, p *Peer, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.session, e.addr = p, addr
	e.serving = c.params.health == nil
	e.state = connectivity.Connecting
	if e.serving {
		e.state = connectivity.Ready
	}
	c.updateLocked()
}

// endpointServing records a health report on p, if p is e's session;
// err says why the check failed, if it did.
func (c *Client) endpointServing(e *endpoint, p *Peer, serving bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.session != p {
		return
	}
	e.serving = serving
	e.state = connectivity.Ready
	if !serving {
		e.state = connectivity.TransientFailure
		c.lastErr = cmp.Or(err, fmt.Errorf("%s reports not serving", p.RemoteAddr()))
	}
	c.updateLocked()
}

// endpointDown records that p, if it is e's session, takes no more calls.
func (c *Client) endpointDown(e *endpoint, p *Peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.session != p {
		return
	}
	if err := p.Err(); err != nil {
		c.lastErr = fmt.Errorf("session to %s ended: %w", p.RemoteAddr(), err)
	}
	e.loseSessionLocked()
}

// dropReady takes p out of the ready set at once, when a call finds it
// going away before its endpoint has seen it.
func (c *Client) dropReady(p *Peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.endpoints {
		if e.session == p {
			e.loseSessionLocked()
			return
		}
	}
}

// loseSessionLocked forgets e's session, which takes no more calls; e
// connects again.
func (e *endpoint) loseSessionLocked() {
	e.session, e.addr, e.serving = nil, "", false
	e.state = connectivity.Connecting
	e.c.updateLocked()
}

// updateLocked rebuilds the ready set from the endpoints and derives the
// Client's state from theirs, as gRPC does: Ready if any endpoint is,
// else Connecting if any connects, else TransientFailure.
func (c *Client) updateLocked() {
	if c.state == connectivity.Shutdown {
		return
	}
	var peers []*Peer
	connecting := false
	for _, e := range c.endpoints {
		if e.session != nil && e.serving {
			peers = append(peers, e.session)
		}
		connecting = connecting || e.state == connectivity.Connecting || e.state == connectivity.Idle
	}
	if len(peers) > 0 {
		c.ready.Store(&readySet{peers: peers})
	} else {
		c.ready.Store(nil)
	}
	switch {
	case len(peers) > 0:
		c.setStateLocked(connectivity.Ready)
	case connecting:
		c.setStateLocked(connectivity.Connecting)
	case len(c.endpoints) > 0 || c.lastErr != nil:
		c.setStateLocked(connectivity.TransientFailure)
	default: // waiting for the resolver's first addresses
		c.setStateLocked(connectivity.Connecting)
	}
}
