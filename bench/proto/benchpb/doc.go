// Package benchpb is the Go code of bench.proto, the benchmark's services
// and messages: protoc-gen-go's messages (Payload), protoc-gen-muxrpc's
// services (BenchClient, RegisterBenchServer, ...) and protoc-gen-go-drpc's
// (DRPCBenchClient, DRPCRegisterBench, ...). gRPC-Go's are in benchgrpc.
package benchpb
