package rpc

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNoGRPCRootPackage keeps grpc's root package, megabytes of binary,
// out of the programs that use only mux and rpc: the grpc call options
// that rpc honours it knows by their type's name (grpcoptions.go), and
// the bridges to gRPC live in packages of their own.
func TestNoGRPCRootPackage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", "github.com/muxrpc/muxrpc/rpc", "github.com/muxrpc/muxrpc/mux").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !slices.Contains(deps, "google.golang.org/grpc/status") {
		t.Fatalf("go list -deps listed %d packages, not rpc's", len(deps))
	}
	if slices.Contains(deps, "google.golang.org/grpc") {
		t.Error("rpc or mux imports google.golang.org/grpc")
	}
}
