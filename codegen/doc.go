// Package codegen generates muxrpc service code from .proto files. It is
// the generator behind the protoc plugin protoc-gen-muxrpc (in
// cmd/protoc-gen-muxrpc), built on protogen, so the standard plugin
// parameters (paths=import|source_relative, module=, M mappings) behave as
// they do for protoc-gen-go. Its own parameter, grpc_coexist=true, is for
// code that sits beside protoc-gen-go-grpc's (see below).
//
// # What it generates
//
// For each .proto file that declares services, one <name>_muxrpc.pb.go
// beside protoc-gen-go's <name>.pb.go, in the same Go package; a file
// without services gets none. It imports the rpc package, context, the
// message packages, and grpc's small codes and status packages (for
// codes.Unimplemented), never grpc itself. For a service Foo in package
// pkg, with a method Bar:
//
//   - Foo_Bar_FullMethodName, the constant "/pkg.Foo/Bar".
//   - FooClient, the client interface, and NewFooClient(cc
//     rpc.ClientConnInterface) FooClient. A unary method is
//     Bar(ctx, *Req, ...rpc.CallOption) (*Res, error); streaming methods
//     return rpc.ServerStreamingClient[Res], rpc.ClientStreamingClient[Req,
//     Res] or rpc.BidiStreamingClient[Req, Res], with typed Send and Recv.
//     cc is any *rpc.Peer, whichever side of the session dialed, so the
//     same client calls a server or, from a handler, the caller's
//     callbacks (rpc.PeerFromContext).
//   - FooServer, the server interface, with rpc.ServerStreamingServer[Res]
//     and the like for streaming methods; Foo_BarClient and Foo_BarServer
//     alias the stream types of a streaming method Bar.
//   - UnimplementedFooServer, which answers each method with
//     codes.Unimplemented.
//   - RegisterFooServer(r rpc.ServiceRegistrar, srv FooServer) and
//     Foo_ServiceDesc, the rpc.ServiceDesc it registers.
//
// The shapes are those of protoc-gen-go-grpc (v1.5, generic streams), so
// code written against gRPC-Go's generated code ports by changing the
// grpc package to rpc.
//
// # Beside protoc-gen-go-grpc
//
// The names above are protoc-gen-go-grpc's, so its <name>_grpc.pb.go and
// ours cannot be in one Go package. The plugin parameter
// grpc_coexist=true puts the prefix Mux right before the service's name
// in every package-level identifier the generator declares, as DRPC names
// its code to sit beside gRPC's. For a service Foo with a method Bar:
//
//   - MuxFoo_Bar_FullMethodName, still the constant "/pkg.Foo/Bar".
//   - MuxFooClient and NewMuxFooClient (and its implementation,
//     muxFooClient).
//   - MuxFooServer, UnimplementedMuxFooServer and RegisterMuxFooServer.
//   - MuxFoo_ServiceDesc, whose ServiceName is still "pkg.Foo", and the
//     handlers _MuxFoo_Bar_Handler.
//   - MuxFoo_BarClient and MuxFoo_BarServer for a streaming method Bar.
//
// What goes on the wire does not change: a muxrpc peer with the prefixed
// code calls and serves the same service and methods as one without.
// Generate both into one directory, beside protoc-gen-go's messages:
//
//	protoc --go_out=. --go-grpc_out=. --muxrpc_out=. --muxrpc_opt=grpc_coexist=true foo.proto
//
// With grpc_coexist=true the names protoc-gen-go-grpc declares count as
// taken, as protoc-gen-go's always do (see Comments and names below): a
// service MuxFoo beside a service Foo gives Foo's client MuxFooClient_.
// grpc_coexist=false, the default, leaves the names as above; any other
// value is an error.
//
// # Forward compatibility without mustEmbed
//
// Unlike protoc-gen-go-grpc, FooServer does not require embedding
// UnimplementedFooServer (there is no mustEmbedUnimplementedFooServer
// method, so no UnsafeFooServer either), as in connect-go: any type with
// the methods is a FooServer, a test double included. Embedding
// UnimplementedFooServer by value is recommended: the implementation keeps
// compiling when methods are added, and answers them Unimplemented.
// RegisterFooServer panics at once if it was embedded as a nil pointer,
// which would otherwise panic on the first call of a missing method.
//
// # Comments and names
//
// Leading comments of services and methods become doc comments, and
// one-line trailing comments of methods stay trailing comments; the
// deprecated option adds a "Deprecated:" paragraph. Names come from
// protogen (CamelCase, so a method func or type becomes Func or Type). A
// generated package-level name that another identifier of the Go package
// already has (a message FooClient, or MuxFooClient with grpc_coexist=true,
// a nested message Foo.ServiceDesc,
// services foo and Foo, a service Foo_Bar's method Baz beside a service
// Foo's method Bar_Baz) gets a trailing underscore, as protoc-gen-go does
// for fields; methods whose names clash within a service likewise. The
// check covers the files of the request in that Go package. Variables in
// generated functions that would hide an imported package (a message
// package named stream, say) get a trailing underscore too.
//
// # Files, editions and errors
//
// Proto2, proto3 and editions files (up to edition 2024, as protoc-gen-go)
// are supported; the plugin reports FEATURE_PROTO3_OPTIONAL and
// FEATURE_SUPPORTS_EDITIONS. Any problem with the request, including input
// that is not a request at all, an unknown parameter or an unsupported
// edition, is reported in the response's error field, never as a panic.
package codegen
