// Command muxrpcurl is grpcurl for muxrpc: it lists and describes the
// services of a muxrpc server through the gRPC reflection service the
// server serves over muxrpc, and calls their methods with requests given
// in JSON, printing the responses in JSON.
//
// Usage:
//
//	muxrpcurl [flags] ADDRESS list [SERVICE]
//	muxrpcurl [flags] ADDRESS describe [SYMBOL]
//	muxrpcurl [flags] [-d JSON] ADDRESS SERVICE/METHOD
//
// ADDRESS is "host:port", or "unix:/path" for a Unix socket. The session
// is plain TCP unless -tls is given. SERVICE/METHOD may also be written
// SERVICE.METHOD. Run muxrpcurl -help for the flags.
//
// The server must serve gRPC-Go's reflection service, which registers on a
// muxrpc server through package grpcstub:
//
//	srv := rpc.NewServer()
//	echov1.RegisterEchoServer(srv, impl)
//	reflection.Register(grpcstub.Registrar(srv))
//
// The command is grpcurl's own machinery (github.com/fullstorydev/grpcurl
// and jhump/protoreflect's reflection client) calling through
// grpcstub.Conn, so its output is grpcurl's: a call prints each response
// message, and with -v the method's descriptor, the request metadata, the
// response headers and the response trailers as well. Its exit codes are
// grpcurl's too: 0 on success, 2 for a usage error, 1 for any other
// failure before the call completes (dialing, reflection, a request that
// does not parse), and 64 plus the status code when the call ends with a
// status other than OK (65 for Canceled, ..., 76 for Unimplemented), the
// code and message printed on standard error.
//
// The command is a module of its own, so that muxrpc's users do not
// inherit grpcurl's dependencies. Install it with
//
//	go install github.com/muxrpc/muxrpc/rpc/cmd/muxrpcurl@latest
//
// or, in a checkout, from its directory: go install . (or go run .).
package main
