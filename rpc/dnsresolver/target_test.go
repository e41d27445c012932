package dnsresolver

import (
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/resolver"
)

// mustTarget parses s as a client would, as a URL.
func mustTarget(t *testing.T, s string) resolver.Target {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", s, err)
	}
	return resolver.Target{URL: *u}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want target
	}{
		{"dns:///example.com:50051", target{host: "example.com", port: "50051"}},
		{"dns:example.com:80", target{host: "example.com", port: "80"}},
		{"dns:///example.com.:80", target{host: "example.com.", port: "80"}},
		{"dns:///_api._tcp.example.com", target{host: "_api._tcp.example.com"}},
		{"dns:///localhost", target{host: "localhost"}},
		{"dns:///10.0.0.1:8080", target{host: "10.0.0.1", port: "8080", ip: true}},
		{"dns:///10.0.0.1", target{host: "10.0.0.1", ip: true}},
		{"dns:///[::1]:8080", target{host: "::1", port: "8080", ip: true}},
		{"dns:///[2001:db8::1]", target{host: "2001:db8::1", ip: true}},
		{"dns:///2001:db8::1", target{host: "2001:db8::1", ip: true}},
		{"dns://8.8.8.8/example.com:443", target{host: "example.com", port: "443", server: "8.8.8.8:53"}},
		{"dns://127.0.0.1:5353/example.com", target{host: "example.com", server: "127.0.0.1:5353"}},
		{"dns://[::1]/example.com:1", target{host: "example.com", port: "1", server: "[::1]:53"}},
		{"dns://[::1]:5353/example.com:1", target{host: "example.com", port: "1", server: "[::1]:5353"}},
		{"dns://ns1.example.net/example.com:1", target{host: "example.com", port: "1", server: "ns1.example.net:53"}},
	} {
		got, err := parseTarget(mustTarget(t, tc.in))
		if err != nil {
			t.Errorf("parseTarget(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("parseTarget(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseTargetErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: in the error's message
	}{
		{"dns:///", "missing host"},
		{"dns://8.8.8.8", "missing host"},
		{"dns:///:50051", "missing host"},
		{"dns:///example.com:", "missing port"},
		{"dns:///example.com:http", `bad port "http"`},
		{"dns:///example.com:0", `bad port "0"`},
		{"dns:///example.com:65536", `bad port "65536"`},
		{"dns:///example.com:-1", `bad port "-1"`},
		{"dns:///[::1", "missing ']'"},
		{"dns:///[::1]x", "missing port"},
		{"dns:///[example.com]:80", "not an IPv6 address"},
		{"dns:///[10.0.0.1]", "not an IPv6 address"},
		{"dns:///a:b:c", "too many colons"},
		{"dns:///exa%20mple.com:80", "not allowed in a DNS name"},
		{"dns:///example..com:80", "label is empty"},
		{"dns:///" + strings.Repeat("a", 64) + ".com:80", "longer than 63"},
		{"dns:///" + strings.Repeat("a.", 127) + "aa:80", "longer than 253"},
		{"dns:///a/b:80", "not allowed in a DNS name"},
		{"dns://8.8.8.8:x/example.com", "invalid port"}, // url.Parse already refuses it
		{"dns://user@8.8.8.8/example.com", "user information"},
		{"dns://8.8.8.8:0/example.com", `bad port "0"`},
		{"dns://ns_1!.example/example.com", "DNS server"},
	} {
		u, err := url.Parse(tc.in)
		if err != nil {
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("url.Parse(%q): %v, want it to mention %q", tc.in, err, tc.want)
			}
			continue
		}
		_, err = parseTarget(resolver.Target{URL: *u})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseTarget(%q): error %v, want one mentioning %q", tc.in, err, tc.want)
		}
	}
	// An authority url.Parse would refuse, in a Target made by hand.
	_, err := parseTarget(resolver.Target{URL: url.URL{Scheme: "dns", Host: "[::1", Path: "/example.com:80"}})
	if err == nil || !strings.Contains(err.Error(), "DNS server") {
		t.Errorf("parseTarget with authority [::1: error %v, want one about the DNS server", err)
	}
}
