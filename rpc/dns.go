package rpc

import "github.com/muxrpc/muxrpc/rpc/dnsresolver"

// dnsBuilder resolves dns: targets and plain host:port ones: A and AAAA
// records, or SRV records for a name without a port, resolved again every
// 30 s and when a connection fails. Give WithResolvers a
// dnsresolver.NewBuilder with other settings to change them.
var dnsBuilder = dnsresolver.NewBuilder()
