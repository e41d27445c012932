// Package grpcport serves a muxrpc Server's services to gRPC clients on
// the muxrpc port itself: one listener, both protocols.
//
// A connection's first bytes tell the protocols apart: muxrpc's preface
// ("MUXRPC", or an smux frame on the Smux transport) goes to the
// rpc.Server, HTTP/2's ("PRI * HTTP/2.0") to gRPC-Go's own server, which
// serves the same services with the same interceptors:
//
//	srv := rpc.NewServer(interceptors.UnaryServer(logging.UnaryServerInterceptor(logger)))
//	pb.RegisterGreeterServer(srv, impl)
//	health.Register(srv, health.NewServer())     // grpc.health.v1, on both protocols
//	reflection.Register(grpcstub.Registrar(srv)) // grpc.reflection.v1 and v1alpha, likewise
//	port := grpcport.New(srv)
//	err := port.Serve(lis)
//
// With TLS (WithTLS), the port speaks TLS only, and the protocol a client
// negotiated with ALPN decides: "h2" is gRPC, anything else muxrpc.
//
// A gRPC caller gets what a muxrpc caller gets: the Server's unary and
// stream interceptors, its Authenticator (run on each gRPC call, with the
// call's metadata as the hello's, since gRPC has no session hello; an
// error fails the call with the Authenticator's status), its handlers'
// panics turned into Internal, and rpc.SetHeader, rpc.SendHeader,
// rpc.SetTrailer and rpc.Method working in the handlers as grpc's do.
// Callbacks stay a muxrpc feature: a gRPC caller exposes no services, so
// rpc.PeerFromContext returns nil in its calls' handlers.
//
// What a connection costs before its protocol is known: the connection,
// one goroutine, and no buffer. On TCP and Unix sockets the port peeks at
// the first bytes (MSG_PEEK) without taking them off the socket, so the
// connection reaches muxrpc or gRPC untouched; elsewhere it reads them
// into an 8-byte array and replays them. It reads at most 8 bytes, and a
// connection that has not sent them within the handshake timeout (10 s by
// default) is closed; at most 1,024 connections are being told apart at
// once, and the port accepts no more until one is. A connection that
// begins like HTTP/1.1 gets a 400 response that says what the port
// speaks; any other bytes go to muxrpc, which rejects what it does not
// speak.
package grpcport
