// Package dnsresolver resolves names over DNS for muxrpc clients, and for
// any other user of google.golang.org/grpc/resolver: [NewBuilder] gives a
// resolver.Builder for the "dns" scheme.
//
// Targets follow gRPC's naming syntax, dns:[//authority/]host[:port]:
//
//	dns:///api.example.com:50051      A and AAAA records, port 50051
//	dns:///_api._tcp.example.com      SRV records, each target's A and AAAA
//	                                  at the record's port
//	dns://10.0.0.2/api.example.com:80 the same, asking the DNS server
//	                                  10.0.0.2:53 instead of the system's
//
// A host with a port is looked up for its A and AAAA records: one address
// per IP, with that port. A host without a port is first looked up as an
// SRV name, its records kept in the order Go gives them (priority, then
// weight), each target's IPs at the record's port; when the name has no
// SRV records its own A and AAAA records are used at port 443. An IP
// literal is its own address, with no DNS query, reported before Build
// returns.
//
// The resolver looks the name up again periodically ([RefreshInterval]),
// and when the ClientConn asks with ResolveNow, but not sooner than
// [MinResolveInterval] after the last lookup, and not before the retry of
// a failed one; requests made meanwhile count as one. Each resolution has
// a time limit ([ResolveTimeout]), and Close cancels one under way. It calls UpdateState only when the set of
// addresses differs from the last one it gave (or after it reported an
// error); a failed lookup goes to ReportError, keeping the last addresses,
// and is retried with exponential backoff, as is an UpdateState that
// returns an error.
//
// An Address carries only Addr: a name from DNS is not trusted enough to
// become the ServerName that TLS verifies.
//
// The builder is not registered with resolver.Register; pass it where it
// is wanted, e.g. grpc.WithResolvers(dnsresolver.NewBuilder()).
package dnsresolver
