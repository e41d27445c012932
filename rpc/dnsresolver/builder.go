package dnsresolver

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc/resolver"
)

// Defaults of the options.
const (
	defaultRefreshInterval    = 30 * time.Second
	defaultMinResolveInterval = time.Second
	defaultResolveTimeout     = 10 * time.Second
)

// options are what the Options set.
type options struct {
	refresh    time.Duration
	minResolve time.Duration
	timeout    time.Duration
}

// An Option changes a setting of the builder.
type Option func(*options)

// RefreshInterval sets how long a resolver waits after a successful
// resolution before resolving again (default 30s). It also caps the
// backoff between a failed resolution and its retry, which starts at 1s
// and doubles with each failure in a row. A non-positive d keeps the
// default.
func RefreshInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.refresh = d
		}
	}
}

// MinResolveInterval sets the least time between the end of one
// resolution and the start of the next that a ResolveNow asks for
// (default 1s), so a
// ClientConn that asks on every failed connection cannot make the resolver
// query in a loop. Periodic refreshes and retries keep their own schedule.
// A non-positive d keeps the default.
func MinResolveInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.minResolve = d
		}
	}
}

// ResolveTimeout sets how long one resolution, all its queries included,
// may take before it fails (default 10s). A non-positive d keeps the
// default.
func ResolveTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// NewBuilder returns a resolver.Builder for the "dns" scheme, with the
// given options. One builder may build any number of resolvers.
func NewBuilder(opts ...Option) resolver.Builder {
	b := &builder{opts: options{
		refresh:    defaultRefreshInterval,
		minResolve: defaultMinResolveInterval,
		timeout:    defaultResolveTimeout,
	}}
	for _, o := range opts {
		o(&b.opts)
	}
	return b
}

type builder struct {
	opts options
}

// Scheme returns "dns".
func (b *builder) Scheme() string { return "dns" }

// Build parses the target and starts resolving it. It fails only on a
// target it cannot parse; failures to resolve go to cc.ReportError.
func (b *builder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	pt, err := parseTarget(t)
	if err != nil {
		return nil, err
	}
	if pt.ip {
		// Nothing to look up, nor ever to look up again: the result
		// cannot change, so an error from UpdateState is left alone.
		_ = cc.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: net.JoinHostPort(pt.host, pt.portOr(defaultPort))}}})
		return nopResolver{}, nil
	}
	r := &dnsResolver{
		cc:   cc,
		t:    pt,
		opts: b.opts,
		res:  net.DefaultResolver,
		now:  make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	if pt.server != "" {
		server := pt.server
		r.res = &net.Resolver{
			PreferGo: true,
			// The Go resolver dials "udp", and "tcp" for a truncated
			// answer; both go to the target's server. It bounds its
			// reads by the context's deadline only, not by its
			// cancellation: closing the connection when the context
			// ends makes a lookup that Close cancels end at once.
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, network, server)
				if err != nil {
					return nil, err
				}
				context.AfterFunc(ctx, func() { c.Close() })
				return c, nil
			},
		}
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	return r, nil
}

// nopResolver is the resolver of an IP literal.
type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}
