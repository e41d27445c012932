// Package proto holds the benchmark's .proto file and the Go code generated
// from it for each framework compared:
//
//   - benchpb: bench.proto, its messages, and its services for muxrpc and
//     DRPC;
//   - benchgrpc: its services for gRPC-Go, in a package of their own since
//     protoc-gen-go-grpc and protoc-gen-muxrpc generate the same names.
//
// Regenerate it with go generate ./proto (or bench/generate.sh), which
// needs protoc; a test checks that the committed code is what the
// generators produce.
package proto

//go:generate bash ../generate.sh
