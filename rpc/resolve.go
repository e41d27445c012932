package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// resolverConn is the Client as its resolver sees it: where the resolver
// reports addresses and errors.
type resolverConn Client

// errNoAddresses is what a resolver's update without addresses is: an
// error, which keeps the sessions the Client has, since a name that
// resolves to nothing for a moment must not end every call.
var errNoAddresses = errors.New("the resolver produced no addresses")

// UpdateState takes the resolver's latest addresses: the Client keeps a
// session to each one its balancer uses, opening sessions to new ones and
// retiring those to addresses no longer listed, their calls in flight
// finishing first.
func (r *resolverConn) UpdateState(s resolver.State) error {
	c := (*Client)(r)
	groups := addressGroups(s)
	if len(groups) == 0 {
		r.ReportError(errNoAddresses)
		return errNoAddresses
	}
	if c.params.balancer == PickFirst {
		groups = [][]resolver.Address{slices.Concat(groups...)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == connectivity.Shutdown {
		return ErrConnClosing
	}
	old := make(map[string]*endpoint, len(c.endpoints))
	for _, e := range c.endpoints {
		old[e.key] = e
	}
	endpoints := make([]*endpoint, 0, len(groups))
	for _, g := range groups {
		key := groupKey(g)
		if c.params.balancer == PickFirst {
			key = "" // one endpoint, whose addresses change
		}
		e := old[key]
		if e != nil && e.session != nil && !slices.ContainsFunc(g, func(a resolver.Address) bool { return a.Addr == e.addr }) {
			e = nil // pick-first's session goes to an address no longer listed
		}
		if e == nil {
			e = c.newEndpointLocked(key)
		} else {
			delete(old, key)
		}
		e.addrs = g
		endpoints = append(endpoints, e)
	}
	for _, e := range old {
		e.cancel() // its goroutine retires its session
	}
	c.endpoints = endpoints
	c.updateLocked()
	return nil
}

// newEndpointLocked starts an endpoint's goroutine.
func (c *Client) newEndpointLocked(key string) *endpoint {
	e := &endpoint{c: c, key: key, state: connectivity.Idle}
	e.ctx, e.cancel = context.WithCancel(c.ctx)
	c.wg.Add(1)
	go e.run()
	return e
}

// addressGroups returns the addresses of s, one group per endpoint of
// the resolver (each tried in order), or one group per address when the
// resolver gave addresses alone.
func addressGroups(s resolver.State) [][]resolver.Address {
	var groups [][]resolver.Address
	for _, e := range s.Endpoints {
		if len(e.Addresses) > 0 {
			groups = append(groups, e.Addresses)
		}
	}
	if len(groups) > 0 {
		return groups
	}
	for _, a := range s.Addresses {
		groups = append(groups, []resolver.Address{a})
	}
	return groups
}

// groupKey identifies an endpoint by its addresses.
func groupKey(g []resolver.Address) string {
	var b strings.Builder
	for _, a := range g {
		b.WriteString(a.Addr)
		b.WriteByte(0)
		b.WriteString(a.ServerName)
		b.WriteByte(0)
	}
	return b.String()
}

// ReportError records that the resolver failed: calls that fail fast
// while no session is ready say why.
func (r *resolverConn) ReportError(err error) {
	c := (*Client)(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = fmt.Errorf("resolving %s: %w", c.target, err)
	c.updateLocked()
}

// NewAddress is the deprecated form of UpdateState.
func (r *resolverConn) NewAddress(addrs []resolver.Address) {
	r.UpdateState(resolver.State{Addresses: addrs})
}

// ParseServiceConfig refuses service configs: the Client takes its
// settings from its options.
func (r *resolverConn) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{Err: errors.New("rpc: service configs are not supported; the Client's options set its balancer and health checks")}
}
