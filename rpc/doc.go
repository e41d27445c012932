// Package rpc makes calls over mux sessions: each call opens one stream of
// a session and carries length-prefixed protocol buffers on it, with the
// semantics of gRPC (status codes, metadata, deadlines, interceptors).
//
// The session is symmetric. Both of its sides are a [Peer]: one that calls
// the other side, through generated clients built on it, and serves the
// other side's calls when it has services. A client that dials with
// [WithServices] exposes callbacks; a server's handler finds the caller's
// Peer with [PeerFromContext] and calls them on the same connection, no
// second listener needed. A [Server] accepts sessions and gives each its
// Peer; [OnPeer] and [Server.Peers] let it call clients outside handlers.
//
//	srv := rpc.NewServer()
//	echov1.RegisterEchoServer(srv, &echo{})
//	go srv.Serve(lis)
//
//	callbacks := rpc.NewServer()
//	echov1.RegisterNotifierServer(callbacks, &notifier{})
//	peer, err := rpc.Dial(ctx, addr, rpc.WithServices(callbacks))
//	reply, err := echov1.NewEchoClient(peer).Unary(ctx, req)
//
// A Peer lives and dies with its session. A [Client], made by
// [NewClient] for a target in gRPC's syntax ("dns:///host:port", say, or
// a resolver.Builder's scheme, etcd's among them), is what a program holds
// for months instead: it resolves the target, keeps a session to each
// address its [Balancer] uses, reconnects with backoff, moves calls the
// server never processed to another session, and serves the services of
// WithServices on every session it holds. Servers rebalance such clients
// with [MaxConnectionAge]; package rpc/health serves and checks the
// standard health service ([WithHealthCheck]).
//
// Every session begins with a hello: the dialing side sends, once,
// session metadata ([WithSessionMetadata]: an agent's id and token, say)
// and the names of the services it serves, and the Server's
// [Authenticator] ([WithAuthenticator]) admits the session under an
// [Identity] or refuses it, before any call on it is served and before
// OnPeer runs; a refused Dial fails with the refusal's status. Handlers
// find the Identity with [IdentityFromContext], and the Server's
// [Directory] lists its peers by the Identity's Name, so that "the agent
// of customer 42" is a lookup, also after the agent has reconnected.
//
// [Directory.Conn] is a ClientConnInterface for the agent of one name,
// whichever of its sessions is the newest live one when a call starts,
// so that an agent that reconnects is reached the same way;
// [Directory.Fleet] is one for every agent whose session hello announced
// a service, each call going to one of them by a Balancer, or with
// [StickyKey] to the agent its key belongs to; [FanOut] calls every agent
// of a Fleet at once, each call with its own deadline. Like a Client's,
// such calls move to another session when theirs went away before
// processing them.
//
// [Peer.Stats] is what an operator asks of a session: the other side's
// address, Identity and TLS state, the transport, when the session began,
// its open streams, the calls in flight each way, the bytes sent and
// received on the connection, and the last keepalive round trip. It reads
// counters the Peer and its session keep anyway, so calls pay nothing for
// it; on a Server, [Server.Peers] lists the Peers to ask, and package
// rpc/peermetrics exports their Stats to Prometheus at scrape time.
//
// Errors carry a gRPC status: status.Code(err) is the call's code, and a
// cancelled or expired context gives Canceled or DeadlineExceeded. A call
// the other side never processed (refused over its concurrency limit, or
// sent after a GoAway) fails with Unavailable and [IsRetrySafe]; Invoke
// retries it once by itself. Metadata travels as in gRPC: outgoing from
// metadata.NewOutgoingContext, incoming in the handler's context, and
// response headers and trailers with [SetHeader], [SendHeader],
// [SetTrailer] in handlers and the [Header] and [Trailer] call options.
//
// The package logs with log/slog, to the logger of [WithLogger] or
// slog.Default(): a handler's panic at Error, with the method, the
// caller's address and the stack (the caller gets Internal without the
// panic value), sessions that ended because the peer broke the protocol
// or stopped answering at Warn, and refused or otherwise ended sessions
// at Debug; never a successful call, and nothing once per call at Info
// or above. WithLogger's documentation lists the events.
//
// gRPC's stats handlers (google.golang.org/grpc/stats) observe sessions
// and calls as in gRPC-Go, with the same events in the same order and
// the same fields, message sizes and times, on both sides of a session
// and in both roles, the calls a side makes and those it serves:
// [WithStatsHandler] installs one on a Server, a Peer or a Client, and
// [WithRoleStatsHandlers] a pair for handlers written for one role, as
// OpenTelemetry's otelgrpc.NewClientHandler and NewServerHandler are.
// With those, a call's server span is the child of its client span, the
// trace context travelling in the call's metadata, and a callback a
// handler makes with its context is the child of the handler's span. A
// side without stats handlers pays nothing for them.
//
// The types that generated code uses ([ServiceDesc], [ClientConnInterface],
// [ServiceRegistrar], the typed streams) mirror grpc-go's, so code and
// habits carry over; package interceptors adapts go-grpc-middleware's
// interceptors, and gRPC-Go's call options work on every call (see
// [CallOption]). Package rpc/grpcstub runs code generated by
// protoc-gen-go-grpc on muxrpc, and package rpc/grpcport serves a
// Server's services to gRPC clients on the muxrpc port; both import
// grpc's root package, which this one does not. PROTOCOL.md, part two,
// specifies the wire format.
package rpc
