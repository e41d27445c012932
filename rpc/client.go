package rpc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// A Client calls servers over sessions that it opens and replaces by
// itself, for as long as the program holds it: the long-lived counterpart
// of grpc.NewClient's ClientConn. It resolves its target into addresses,
// keeps a session to each address its balancer uses, reconnecting with
// backoff when one fails or is sent away, and sends each call over one of
// the sessions ready at that moment. Generated clients work on it as on a
// Peer.
//
// A call that the server never processed (its session was sent away or
// failed before the server took the call) moves to another session by
// itself; a call that may have run fails with Unavailable and is never
// sent again. The services given with WithServices are served on every
// session the Client holds, so the server can always call back.
type Client struct {
	target    string
	cfg       peerConfig
	params    clientParams
	unaryInt  UnaryClientInterceptor
	streamInt StreamClientInterceptor
	builder   resolver.Builder
	rt        resolver.Target
	authority string // the host calls are for: TLS's server name when neither the address nor WithTLS gives one

	ready  atomic.Pointer[readySet] // the sessions calls go to now
	turn   atomic.Uint32            // round robin's position
	ctx    context.Context          // ends when the Client closes: its endpoints stop
	cancel context.CancelFunc
	// stop ends the sessions the Client retires at once, ending their
	// calls in flight: Close's bound has passed.
	stopped context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup // the endpoints' goroutines and the sessions they retire

	mu        sync.Mutex
	state     connectivity.State
	changed   chan struct{} // closed, and replaced, when state changes
	lastErr   error         // why the latest connection or resolution failed
	res       resolver.Resolver
	resErr    error // the resolver could not be built: every call fails with it
	endpoints []*endpoint
}

// readySet is the sessions that calls may go to, in the order of the
// resolver's addresses.
type readySet struct {
	peers []*Peer
}

// NewClient returns a Client for target, without connecting: the first
// call, or Connect, starts resolving and connecting, as with
// grpc.NewClient. target follows gRPC's naming: "dns:///host:port",
// "dns://server/host:port", "unix:///path" or "unix:path",
// "passthrough:///host:port", "static:///a:1,b:2", a plain "host:port"
// (resolved by DNS), or scheme:///name for a resolver.Builder given with
// WithResolvers or registered with resolver.Register (those written for
// gRPC, etcd's naming resolver among them). The DialOptions that Dial takes apply to every session,
// and the Client's own options (WithBalancer, WithConnectParams,
// WithHealthCheck, WithResolvers) to the Client. A target with a scheme
// that no resolver serves is an error.
func NewClient(target string, opts ...DialOption) (*Client, error) {
	cfg := newPeerConfig()
	for _, o := range opts {
		o.applyToPeer(&cfg)
	}
	params := cfg.client.withDefaults()
	rt, builder, err := parseTarget(target, params.resolvers)
	if err != nil {
		return nil, fmt.Errorf("rpc: NewClient: %w", err)
	}
	c := &Client{
		target:    target,
		cfg:       cfg,
		params:    params,
		unaryInt:  chainUnaryClient(cfg.unaryClient),
		streamInt: chainStreamClient(cfg.streamClient),
		builder:   builder,
		rt:        rt,
		authority: targetAuthority(rt),
		state:     connectivity.Idle,
		changed:   make(chan struct{}),
	}
	// The Client runs its interceptors once per call; its sessions' Peers
	// keep them for the calls made on a Peer itself, from a callback's
	// handler through PeerFromContext say.
	c.cfg.owner = c
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.stopped, c.stop = context.WithCancel(context.Background())
	return c, nil
}

// Target returns the target the Client was made for.
func (c *Client) Target() string { return c.target }

// Invoke calls method on one of the Client's servers, as Peer.Invoke does
// on its session. With WaitForReady(true) it waits, up to ctx's deadline,
// for a session to be ready; without, it fails at once with Unavailable
// while the Client is in TransientFailure, and waits while it connects.
func (c *Client) Invoke(ctx context.Context, method string, req, reply any, opts ...CallOption) error {
	if c.unaryInt != nil {
		return c.unaryInt(ctx, method, req, reply, c, c.invoke, opts...)
	}
	return c.invoke(ctx, method, req, reply, c, opts...)
}

func (c *Client) invoke(ctx context.Context, method string, req, reply any, _ ClientConnInterface, opts ...CallOption) error {
	wait := waitsForReady(opts)
	cfg, ctx := c.cfg.startCall(ctx, method, nil, opts)
	var again resend // no bound on moves: sessions go away only so often
	var p *Peer
	for {
		var err error
		if p, err = c.pick(ctx, wait); err != nil {
			return cfg.ended(p, err)
		}
		err = p.invokeWith(ctx, method, req, reply, &cfg)
		if !c.sendAgain(ctx, p, err, &again) {
			return cfg.ended(p, err)
		}
	}
}

// NewStream begins a streaming call on one of the Client's servers, as
// Peer.NewStream does on its session, and waits for a ready session as
// Invoke does.
func (c *Client) NewStream(ctx context.Context, desc *StreamDesc, method string, opts ...CallOption) (ClientStream, error) {
	if c.streamInt != nil {
		return c.streamInt(ctx, desc, c, method, c.newStream, opts...)
	}
	return c.newStream(ctx, desc, c, method, opts...)
}

func (c *Client) newStream(ctx context.Context, desc *StreamDesc, _ ClientConnInterface, method string, opts ...CallOption) (ClientStream, error) {
	wait := waitsForReady(opts)
	cfg, ctx := c.cfg.startCall(ctx, method, desc, opts)
	var again resend
	var p *Peer
	for {
		var err error
		if p, err = c.pick(ctx, wait); err != nil {
			return nil, cfg.ended(p, err)
		}
		cs, err := p.newStreamWith(ctx, desc, method, &cfg)
		if err == nil {
			return cs, nil
		}
		if !c.sendAgain(ctx, p, err, &again) {
			return nil, cfg.ended(p, err)
		}
	}
}

// sendAgain says whether a call that failed with err on p goes to another
// session, by again's rule, and takes a session that went away out of
// the ready set at once, so that the next pick skips it.
func (c *Client) sendAgain(ctx context.Context, p *Peer, err error, again *resend) bool {
	if !again.allows(ctx, p, err) {
		return false
	}
	if p.goingAway() {
		c.dropReady(p)
	}
	return true
}

// resend is the rule by which a call that failed goes to another session,
// and what the call has spent of it: only when the server never processed
// the call (IsRetrySafe). A call refused by a session that is going away
// moves on, up to limit times (0: for as long as sessions go away under
// it); a call refused by a session that lives (its server was over its
// limit, and Peer.invoke has asked it twice) gets one more try, which the
// balancer may send elsewhere.
type resend struct {
	limit   int  // the most moves; 0: no bound
	moves   int  // sessions that went away under the call
	refused bool // a live session refused it once
}

// allows says whether a call that failed with err on p is sent again.
func (r *resend) allows(ctx context.Context, p *Peer, err error) bool {
	if err == nil || !IsRetrySafe(err) || ctx.Err() != nil {
		return false
	}
	if p.goingAway() {
		r.moves++
		return r.limit == 0 || r.moves <= r.limit
	}
	if r.refused {
		return false
	}
	r.refused = true
	return true
}

// pick returns a ready session for a call, waiting for one while the
// Client connects, and with wait, while it fails too.
func (c *Client) pick(ctx context.Context, wait bool) (*Peer, error) {
	for {
		if rs := c.ready.Load(); rs != nil {
			p := c.choose(rs)
			if !p.goingAway() {
				return p, nil
			}
			c.dropReady(p) // its endpoint will see it too; don't wait for that
			continue
		}
		c.mu.Lock()
		switch {
		case c.state == connectivity.Shutdown:
			c.mu.Unlock()
			return nil, errConnClosing()
		case c.resErr != nil:
			err := c.resErr
			c.mu.Unlock()
			return nil, &statusError{status.New(codes.Unavailable, err.Error()), err}
		case c.state == connectivity.Idle:
			c.mu.Unlock()
			c.Connect()
			continue
		case c.ready.Load() != nil:
			c.mu.Unlock()
			continue
		case c.state == connectivity.TransientFailure && !wait:
			err := c.noneReadyLocked()
			c.mu.Unlock()
			return nil, err
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, c.waitEnded(ctx)
		}
	}
}

// choose picks one of the ready sessions by the Client's balancer.
func (c *Client) choose(rs *readySet) *Peer {
	n := uint32(len(rs.peers))
	if n == 1 {
		return rs.peers[0]
	}
	switch c.params.balancer {
	case RoundRobin:
		return rs.peers[c.turn.Add(1)%n]
	case LeastOutstanding:
		return leastOutstanding(rs.peers)
	}
	return rs.peers[0]
}

// leastOutstanding picks the one of two sessions chosen at random that
// has fewer calls in flight.
func leastOutstanding(peers []*Peer) *Peer {
	n := len(peers)
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := peers[i], peers[j]
	if b.outgoing.Load() < a.outgoing.Load() {
		return b
	}
	return a
}

// noneReadyLocked is the error of a fail-fast call while nothing is ready:
// Unavailable, or the code of the server's refusal of the session.
func (c *Client) noneReadyLocked() error {
	cause := c.lastErr
	if cause == nil {
		cause = errors.New("no address to connect to")
	}
	code := codes.Unavailable
	if s, ok := status.FromError(cause); ok && (s.Code() == codes.Unauthenticated || s.Code() == codes.PermissionDenied) {
		code = s.Code() // the server refused the session: say so, as its Dial would
	}
	return &statusError{status.New(code, fmt.Sprintf("rpc: no connection to %s is ready: %v", c.target, cause)), cause}
}

// waitEnded is the error of a call whose context ended while it waited
// for a ready session.
func (c *Client) waitEnded(ctx context.Context) error {
	code := codes.Canceled
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	c.mu.Lock()
	cause := c.lastErr
	c.mu.Unlock()
	msg := fmt.Sprintf("rpc: %v while waiting for a connection to %s", ctx.Err(), c.target)
	if cause != nil {
		msg += fmt.Sprintf(" (last error: %v)", cause)
	}
	return &statusError{status.New(code, msg), ctx.Err()}
}

// GetState returns the Client's connectivity state: Idle before its first
// call or Connect, Connecting while no session is ready and an attempt is
// under way, Ready while a session is, TransientFailure while every
// attempt has failed (fail-fast calls then fail at once), Shutdown after
// Close.
func (c *Client) GetState() connectivity.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// WaitForStateChange waits until the Client's state is other than source,
// and reports true, or until ctx ends, and reports false.
func (c *Client) WaitForStateChange(ctx context.Context, source connectivity.State) bool {
	for {
		c.mu.Lock()
		state, changed := c.state, c.changed
		c.mu.Unlock()
		if state != source {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// Connect makes an Idle Client start resolving its target and connecting,
// without waiting; calls do so by themselves.
func (c *Client) Connect() {
	c.mu.Lock()
	if c.state != connectivity.Idle {
		c.mu.Unlock()
		return
	}
	c.setStateLocked(connectivity.Connecting)
	c.mu.Unlock()
	// The resolver may report its first addresses from within Build.
	res, err := c.builder.Build(c.rt, (*resolverConn)(c), resolver.BuildOptions{Authority: c.authority})
	c.mu.Lock()
	if err != nil {
		c.resErr = fmt.Errorf("rpc: resolving %s: %w", c.target, err)
		c.lastErr = c.resErr
		c.setStateLocked(connectivity.TransientFailure)
		c.mu.Unlock()
		return
	}
	closed := c.state == connectivity.Shutdown
	if !closed {
		c.res = res
	}
	c.mu.Unlock()
	if closed {
		res.Close() // Shutdown ran meanwhile, and found no resolver to close
	}
}

// Close stops the Client: new calls fail at once with Canceled and
// ErrConnClosing, its sessions are sent a GoAway, and Close waits for the
// calls in flight in both directions to finish, for as long as
// mux.Config.CloseTimeout (5 s by default), before it ends what is left
// of them. It returns when every session and goroutine of the Client has
// ended.
func (c *Client) Close() error {
	wait := c.cfg.mux.CloseTimeout
	if wait <= 0 {
		wait = defaultCloseWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c.Shutdown(ctx)
	return nil
}

// defaultCloseWait is how long Close waits for calls in flight by default,
// mux.Config's default CloseTimeout.
const defaultCloseWait = 5 * time.Second

// Shutdown stops the Client as Close does, waiting for the calls in flight
// until ctx ends instead; it then ends them and returns ctx's error.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	res := c.res
	c.res = nil
	c.setStateLocked(connectivity.Shutdown)
	c.ready.Store(nil)
	c.mu.Unlock()
	if res != nil {
		res.Close()
	}
	stop := context.AfterFunc(ctx, c.stop)
	c.cancel()
	c.wg.Wait()
	if !stop() {
		return ctx.Err()
	}
	c.stop()
	return nil
}

// setStateLocked moves the Client to state, waking whoever waits for a
// change. Shutdown is final.
func (c *Client) setStateLocked(state connectivity.State) {
	if c.state == state || c.state == connectivity.Shutdown {
		return
	}
	c.state = state
	close(c.changed)
	c.changed = make(chan struct{})
}

// resolveNow asks the resolver to resolve again: a connection failed.
func (c *Client) resolveNow() {
	c.mu.Lock()
	res := c.res
	c.mu.Unlock()
	if res != nil {
		res.ResolveNow(resolver.ResolveNowOptions{})
	}
}

// retire sees p's session to its end once the Client no longer sends it
// calls: Shutdown waits for the calls in flight in both directions (the
// server's calls back included), ended at once when Close's bound passes.
func (c *Client) retire(p *Peer) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.Shutdown(c.stopped)
	}()
}
