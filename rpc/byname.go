package rpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A NamedConn calls the peer a Directory lists under one name, whichever
// of its sessions is the newest live one when each call starts: an agent
// that reconnects is reached through the same NamedConn, with nothing to
// do on either side. It is a ClientConnInterface, so generated clients
// work on it as on a Peer. Get one with Directory.Conn; it holds no
// resources, and any number may exist.
//
// With no live peer of its name, a call fails at once with Unavailable,
// or, with WaitForReady(true), waits until one joins or its context
// ends. A call that fails because its session went away before the peer
// processed it (IsRetrySafe) goes to the next newest session of the name,
// if any, as a Client's call moves to another session: a few times at
// most, and never a call that may have run. The Server's client
// interceptors (ChainUnaryClient, ChainStreamClient) run once per call,
// with the NamedConn as their ClientConnInterface.
type NamedConn struct {
	d        *Directory
	name     string
	invoker  UnaryInvoker // invoke, made once so that calls through interceptors do not allocate it
	streamer Streamer
}

// Conn returns a NamedConn for the peer listed under name, connected now
// or not.
func (d *Directory) Conn(name string) *NamedConn {
	c := &NamedConn{d: d, name: name}
	c.invoker, c.streamer = c.invoke, c.newStream
	return c
}

// Name returns the name the NamedConn calls.
func (c *NamedConn) Name() string { return c.name }

// Invoke makes a unary call to the newest live peer of the name; see
// NamedConn.
func (c *NamedConn) Invoke(ctx context.Context, method string, req, reply any, opts ...CallOption) error {
	if c.d.unaryInt != nil {
		return c.d.unaryInt(ctx, method, req, reply, c, c.invoker, opts...)
	}
	return c.invoke(ctx, method, req, reply, c, opts...)
}

func (c *NamedConn) invoke(ctx context.Context, method string, req, reply any, _ ClientConnInterface, opts ...CallOption) error {
	return invokeOn(ctx, c, method, req, reply, opts)
}

// NewStream begins a streaming call to the newest live peer of the name;
// see NamedConn.
func (c *NamedConn) NewStream(ctx context.Context, desc *StreamDesc, method string, opts ...CallOption) (ClientStream, error) {
	if c.d.streamInt != nil {
		return c.d.streamInt(ctx, desc, c, method, c.streamer, opts...)
	}
	return c.newStream(ctx, desc, c, method, opts...)
}

func (c *NamedConn) newStream(ctx context.Context, desc *StreamDesc, _ ClientConnInterface, method string, opts ...CallOption) (ClientStream, error) {
	return newStreamOn(ctx, c, desc, method, opts)
}

func (c *NamedConn) directory() *Directory { return c.d }

func (c *NamedConn) choose([]CallOption) *Peer {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	return c.d.newestLocked(c.name)
}

func (c *NamedConn) describe() string { return fmt.Sprintf("peer named %q", c.name) }

// A route is what calls through a Directory go to: a NamedConn's name or
// a Fleet's members.
type route interface {
	directory() *Directory
	// choose returns the live peer a call with opts goes to now, or nil.
	choose(opts []CallOption) *Peer
	// describe names what the route waits for, for errors.
	describe() string
}

// invokeOn makes a unary call through r: to the peer r chooses, and
// again to the next one while resend allows, up to maxMoves times.
func invokeOn(ctx context.Context, r route, method string, req, reply any, opts []CallOption) error {
	cfg, ctx := r.directory().srv.cfg.peer.startCall(ctx, method, nil, opts)
	again := resend{limit: maxMoves}
	var p *Peer
	for {
		var err error
		if p, err = pickOn(ctx, r, opts); err != nil {
			return cfg.ended(p, err)
		}
		err = p.invokeWith(ctx, method, req, reply, &cfg)
		if !again.allows(ctx, p, err) {
			return cfg.ended(p, err)
		}
	}
}

// newStreamOn begins a streaming call through r, as invokeOn makes a
// unary one.
func newStreamOn(ctx context.Context, r route, desc *StreamDesc, method string, opts []CallOption) (ClientStream, error) {
	cfg, ctx := r.directory().srv.cfg.peer.startCall(ctx, method, desc, opts)
	again := resend{limit: maxMoves}
	var p *Peer
	for {
		var err error
		if p, err = pickOn(ctx, r, opts); err != nil {
			return nil, cfg.ended(p, err)
		}
		cs, err := p.newStreamWith(ctx, desc, method, &cfg)
		if err == nil {
			return cs, nil
		}
		if !again.allows(ctx, p, err) {
			return nil, cfg.ended(p, err)
		}
	}
}

// pickOn returns the peer a call goes to: the one r chooses, or with
// WaitForReady(true) the one it chooses once a peer joins. Waiting costs
// the Directory's lock and a channel per change, and only calls that
// find no peer pay it.
func pickOn(ctx context.Context, r route, opts []CallOption) (*Peer, error) {
	if p := r.choose(opts); p != nil {
		return p, nil
	}
	if !waitsForReady(opts) {
		return nil, status.Errorf(codes.Unavailable, "rpc: no %s is connected", r.describe())
	}
	d := r.directory()
	for {
		// The channel is taken before choosing, so that a join between
		// the two closes it rather than going unseen.
		changed := d.waitChange()
		if p := r.choose(opts); p != nil {
			return p, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			code := status.FromContextError(ctx.Err()).Code()
			return nil, status.Errorf(code, "rpc: %v while waiting for a %s", ctx.Err(), r.describe())
		}
	}
}

// maxMoves bounds how many times one call moves on from a session that
// went away under it before processing it: enough for an agent that
// reconnected, or a fleet member's successor, never a loop.
const maxMoves = 4
