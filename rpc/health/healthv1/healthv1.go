// Package healthv1 is the grpc.health.v1.Health service on muxrpc: the
// client, server interface and service descriptor that protoc-gen-muxrpc
// generates from grpc/health/v1/health.proto, in health_muxrpc.pb.go.
//
// The messages are not generated here: registering a second Go type for
// the same protobuf message panics, so the types below are aliases of
// those of google.golang.org/grpc/health/grpc_health_v1, and a message is
// the same value for gRPC and for muxrpc. The generated code is made from
// the file descriptor that package embeds, so the two cannot drift apart;
// regenerate it with go generate ./rpc/health/... after upgrading gRPC.
//
// Most programs use package rpc/health, which serves this service with
// gRPC's own implementation and checks it from a client, rather than this
// package directly.
package healthv1

//go:generate go run ./internal/gen

import healthpb "google.golang.org/grpc/health/grpc_health_v1"

// HealthCheckRequest names the service whose health Check and Watch
// report; the empty name stands for the server as a whole.
type HealthCheckRequest = healthpb.HealthCheckRequest

// HealthCheckResponse carries the serving status of a service.
type HealthCheckResponse = healthpb.HealthCheckResponse

// HealthCheckResponse_ServingStatus is the health of a service.
type HealthCheckResponse_ServingStatus = healthpb.HealthCheckResponse_ServingStatus

// The serving statuses.
const (
	// HealthCheckResponse_UNKNOWN is a status the server has not set.
	HealthCheckResponse_UNKNOWN = healthpb.HealthCheckResponse_UNKNOWN
	// HealthCheckResponse_SERVING means the service takes calls.
	HealthCheckResponse_SERVING = healthpb.HealthCheckResponse_SERVING
	// HealthCheckResponse_NOT_SERVING means the service takes no calls.
	HealthCheckResponse_NOT_SERVING = healthpb.HealthCheckResponse_NOT_SERVING
	// HealthCheckResponse_SERVICE_UNKNOWN is what Watch sends for a service
	// the server does not know (Check answers NotFound instead).
	HealthCheckResponse_SERVICE_UNKNOWN = healthpb.HealthCheckResponse_SERVICE_UNKNOWN
)

// HealthListRequest asks List for the status of every service.
type HealthListRequest = healthpb.HealthListRequest

// HealthListResponse maps each service the server knows to its status.
type HealthListResponse = healthpb.HealthListResponse
