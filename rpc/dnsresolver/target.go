package dnsresolver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"
)

const (
	// defaultPort is the port of a host without one and without SRV
	// records, gRPC's default.
	defaultPort = "443"
	// defaultDNSPort is the port of an authority without one.
	defaultDNSPort = "53"
)

// target is a parsed dns: target.
type target struct {
	host   string // a DNS name, or an IP literal (without brackets) if ip
	port   string // "" if the target has none: SRV records are looked up
	ip     bool   // host is an IP literal
	server string // the DNS server to ask, host:port; "" for the system's
}

// portOr returns the target's port, or def if it has none.
func (t target) portOr(def string) string {
	if t.port == "" {
		return def
	}
	return t.port
}

// parseTarget parses dns:[//authority/]host[:port].
func parseTarget(rt resolver.Target) (target, error) {
	name := rt.String()
	if rt.URL.User != nil {
		return target{}, fmt.Errorf("dnsresolver: target %q: user information in the authority", name)
	}
	endpoint := rt.Endpoint()
	host, port, err := splitHostPort(endpoint)
	if err != nil {
		return target{}, fmt.Errorf("dnsresolver: target %q: %w", name, err)
	}
	t := target{host: host, port: port}
	if _, err := netip.ParseAddr(host); err == nil {
		t.ip = true
	} else if err := checkName(host); err != nil {
		return target{}, fmt.Errorf("dnsresolver: target %q: %w", name, err)
	}
	if auth := rt.URL.Host; auth != "" {
		host, port, err := splitHostPort(auth)
		if err != nil {
			return target{}, fmt.Errorf("dnsresolver: target %q: DNS server %q: %w", name, auth, err)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			if err := checkName(host); err != nil {
				return target{}, fmt.Errorf("dnsresolver: target %q: DNS server %q: %w", name, auth, err)
			}
		}
		if port == "" {
			port = defaultDNSPort
		}
		t.server = net.JoinHostPort(host, port)
	}
	return t, nil
}

// splitHostPort splits host[:port], where host may be an IPv6 literal, in
// brackets or, without a port, bare. The port is "" if s has none.
func splitHostPort(s string) (host, port string, err error) {
	if s == "" {
		return "", "", errors.New("missing host")
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return s, "", nil // an IP literal, IPv6 ones unbracketed
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		inner := s[1 : len(s)-1]
		if a, err := netip.ParseAddr(inner); err != nil || !a.Is6() {
			return "", "", fmt.Errorf("%q in brackets is not an IPv6 address", inner)
		}
		return inner, "", nil
	}
	host, port, err = net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" && !strings.ContainsAny(s, "[]") {
			return s, "", nil
		}
		return "", "", err
	}
	if host == "" {
		return "", "", errors.New("missing host")
	}
	if strings.HasPrefix(s, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", "", fmt.Errorf("%q in brackets is not an IPv6 address", host)
		}
	}
	if port == "" {
		return "", "", errors.New("missing port after the colon")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", "", fmt.Errorf("bad port %q: not a number from 1 to 65535", port)
	}
	return host, port, nil
}

// checkName reports whether name is a DNS name: dot-separated labels of
// 1 to 63 letters, digits, hyphens and underscores (as in SRV names), at
// most 253 characters, with an optional final dot.
func checkName(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return fmt.Errorf("bad host %q: not a DNS name", name)
	}
	if len(n) > 253 {
		return fmt.Errorf("bad host %q: longer than 253 characters", name)
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("bad host %q: a label is empty or longer than 63 characters", name)
		}
		for _, c := range []byte(label) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Errorf("bad host %q: character %q is not allowed in a DNS name", name, c)
			}
		}
	}
	return nil
}
