// Package health is the standard gRPC health service, grpc.health.v1.Health,
// on muxrpc: a server reports whether it (and each of its services) takes
// calls, and a client watches those reports to send calls only where they
// will be served.
//
// The serving side is gRPC-Go's own implementation: a [Server] keeps the
// status of each service, answers Check and List, streams each change to
// every Watch, and Shutdown turns every status NOT_SERVING. [Register]
// puts it on an rpc.Server:
//
//	hs := health.NewServer()
//	health.Register(srv, hs)
//	hs.SetServingStatus("muxrpc.echo.v1.Echo", healthv1.HealthCheckResponse_SERVING)
//
// The checking side is [Check], an rpc.HealthCheck that watches a service
// on the other side of a session, for an rpc client that balances calls
// over sessions by health. A server without the health service counts as
// serving, as in gRPC-Go's client-side health checking.
//
// The wire protocol is gRPC's (doc/health-checking.md in grpc/grpc), and
// the messages are grpc_health_v1's, so a status set here reads the same
// through package healthv1 or gRPC's own health client.
package health
