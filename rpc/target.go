package rpc

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/muxrpc/muxrpc/rpc/dnsresolver"
	"google.golang.org/grpc/resolver"
)

// parseTarget finds the resolver for target, as gRPC does: a target whose
// scheme has a resolver uses it; one without a scheme (a plain host:port)
// is resolved by DNS. A target that names a scheme ("scheme://...") no
// resolver serves is an error, where gRPC would try it as a host name.
func parseTarget(target string, given []resolver.Builder) (resolver.Target, resolver.Builder, error) {
	u, err := url.Parse(target)
	if err != nil && strings.Contains(target, "://") {
		return resolver.Target{}, nil, fmt.Errorf("malformed target %q: %w", target, err)
	}
	if err == nil && u.Scheme != "" {
		if b := findResolver(u.Scheme, given); b != nil {
			return resolver.Target{URL: *u}, b, nil
		}
		if strings.Contains(target, "://") {
			return resolver.Target{}, nil, fmt.Errorf("no resolver for the scheme %q of target %q (give one with WithResolvers)", u.Scheme, target)
		}
	}
	u, err = url.Parse("dns:///" + target)
	if err != nil {
		return resolver.Target{}, nil, fmt.Errorf("malformed target %q: %w", target, err)
	}
	return resolver.Target{URL: *u}, findResolver("dns", given), nil
}

// findResolver returns the resolver for scheme: the Client's own
// (WithResolvers) first, then the ones this package has, then those
// registered with resolver.Register.
func findResolver(scheme string, given []resolver.Builder) resolver.Builder {
	for i := len(given) - 1; i >= 0; i-- {
		if given[i].Scheme() == scheme {
			return given[i]
		}
	}
	for _, b := range builtinResolvers {
		if b.Scheme() == scheme {
			return b
		}
	}
	return resolver.Get(scheme)
}

// builtinResolvers are the schemes every Client understands.
var builtinResolvers = []resolver.Builder{
	staticBuilder{"passthrough"},
	staticBuilder{"static"},
	staticBuilder{"unix"},
	dnsBuilder,
}

// dnsBuilder resolves dns: targets and plain host:port ones: A and AAAA
// records, or SRV records for a name without a port, resolved again every
// 30 s and when a connection fails. Give WithResolvers a
// dnsresolver.NewBuilder with other settings to change them.
var dnsBuilder = dnsresolver.NewBuilder()

// targetAuthority is the host name a target resolves, which TLS verifies
// the server against when neither the address nor WithTLS names one: the
// host of a DNS target, nothing for others (each address's own host then).
func targetAuthority(t resolver.Target) string {
	if t.URL.Scheme != "dns" {
		return ""
	}
	host := t.Endpoint()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if net.ParseIP(host) != nil {
		return ""
	}
	return host
}

// staticBuilder resolves targets that are their own addresses:
// passthrough:///host:port (the address as given), static:///a:1,b:2 (a
// list) and unix:///path or unix:path (a Unix socket).
type staticBuilder struct{ scheme string }

func (b staticBuilder) Scheme() string { return b.scheme }

func (b staticBuilder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	var addrs []resolver.Address
	switch b.scheme {
	case "unix":
		path := t.URL.Path
		if path == "" {
			path = t.URL.Opaque
		}
		if path == "" {
			return nil, fmt.Errorf("unix target %q has no address: give unix:///path or unix:path", t.URL.String())
		}
		addrs = []resolver.Address{{Addr: "unix:" + path}}
	case "static":
		for a := range strings.SplitSeq(t.Endpoint(), ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, resolver.Address{Addr: a})
			}
		}
	default:
		if e := t.Endpoint(); e != "" {
			addrs = []resolver.Address{{Addr: e}}
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s target %q has no address", b.scheme, t.URL.String())
	}
	if err := cc.UpdateState(resolver.State{Addresses: addrs}); err != nil {
		return nil, err
	}
	return staticResolver{}, nil
}

// staticResolver has nothing to resolve again.
type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}
