// Package interceptors runs gRPC interceptors, unchanged, on muxrpc calls.
//
// Users of gRPC-Go already have interceptors: their own, and those of
// github.com/grpc-ecosystem/go-grpc-middleware/v2 (logging, recovery, auth,
// selector, validator, protovalidate, ratelimit, retry, timeout, realip)
// and its Prometheus provider. This package takes those very values, typed
// with grpc's own interceptor types, and turns them into rpc options:
//
//	srv := rpc.NewServer(
//		interceptors.UnaryServer(recovery.UnaryServerInterceptor(), logging.UnaryServerInterceptor(logger)),
//		interceptors.StreamServer(recovery.StreamServerInterceptor(), logging.StreamServerInterceptor(logger)),
//	)
//	peer, err := rpc.Dial(ctx, addr,
//		interceptors.UnaryClient(retry.UnaryClientInterceptor(), timeout.UnaryClientInterceptor(time.Second)),
//		interceptors.StreamClient(retry.StreamClientInterceptor()),
//	)
//
// Each option chains its interceptors in order, the first outermost, as
// grpc.ChainUnaryInterceptor does; several options chain in the order they
// are given, among the rpc package's own interceptors. Client options are
// rpc.Option values, so they also apply to the calls a Server makes back
// to its clients, and server options apply to the services a client
// exposes with rpc.WithServices: interceptors run in both directions of a
// session.
//
// # The contract
//
// The adapters give grpc interceptors what gRPC-Go gives them:
//
//   - a non-nil *grpc.UnaryServerInfo (FullMethod "/pkg.Service/Method"
//     and the service implementation as Server) or *grpc.StreamServerInfo
//     (FullMethod and the IsClientStream and IsServerStream flags);
//   - the rpc package's handler context, which carries the caller's
//     metadata (metadata.FromIncomingContext), its peer (peer.FromContext)
//     and its deadline;
//   - a grpc.ServerTransportStream in that context, so that grpc.SetHeader,
//     grpc.SendHeader, grpc.SetTrailer and grpc.Method work in interceptors
//     and handlers, for unary and streaming calls;
//   - the call's rpc.ServerStream as the grpc.ServerStream: both interfaces
//     have the same method set, so a stream that an interceptor wraps (a
//     middleware.WrappedServerStream, say) reaches the handler as it is;
//   - on the client, a nil *grpc.ClientConn, every grpc.CallOption the
//     caller passed (retry.WithMax given to one call reaches the retry
//     interceptor), a *grpc.StreamDesc with the stream's name and kind, and
//     the rpc.ClientStream as the grpc.ClientStream, both ways;
//   - on the client, call errors that carry GRPCStatus, context errors
//     converted with status.FromContextError; on the server, the handler's
//     error as it returned it, as in gRPC (the rpc package converts it the
//     same way when it sends the trailer).
//
// Call options that are not grpc.CallOption values, the rpc package's own
// (rpc.Header, rpc.MaxCallRecvMsgSize, ...), go around the grpc
// interceptors and reach the call unchanged. The grpc call options that
// the interceptors pass on, the caller's or their own, reach the call
// too, and the rpc package honours each of them or fails the call with
// a clear error (see rpc.CallOption): grpc.Header and grpc.Trailer on
// unary and streaming calls, the message size limits, grpc.WaitForReady,
// grpc.Peer, grpc.PerRPCCredentials, grpc.OnFinish. There is no
// *grpc.ClientConn behind a muxrpc call, so an interceptor that calls
// methods of the one it is given (none of go-grpc-middleware's do) cannot
// run here.
//
// ServiceInfo reports a Server's services with grpc's types, for code that
// wants gRPC's GetServiceInfo, such as the Prometheus provider's
// InitializeMetrics.
//
// The package imports grpc's root package, which the rpc package avoids:
// programs that use no grpc interceptors do not link it.
package interceptors
