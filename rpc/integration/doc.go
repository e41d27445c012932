// Package integration tests muxrpc against real components that no one
// here wrote: an embedded etcd server as the service registry, a DNS
// server run in the test, and gRPC-Go's interop test cases (the client and
// server code of package google.golang.org/grpc/interop, on muxrpc through
// rpc/grpcstub). It is a module of its own so that their weight stays out
// of the requirements of muxrpc's users; it has no code besides its tests.
package integration
