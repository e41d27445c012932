package grpcport_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcport"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"github.com/muxrpc/muxrpc/rpc/health"
	"github.com/muxrpc/muxrpc/rpc/health/healthv1"
	"google.golang.org/grpc/reflection"
)

// tool returns the path of a command the test runs: on PATH (.ci/run
// installs it there), or where go install puts it; otherwise the test
// installs it itself, from the Go module proxy, into the user's cache
// directory, so that it is built once. A tool that cannot be had fails
// the test: the test never passes without running it.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "muxrpc-test-tools")
	p := filepath.Join(bin, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s not found, and go install %s failed: %v\n%s", name, pkg, err, out)
	}
	return p
}

// run runs a tool with args, bounded in time, and returns what it printed
// and its exit code.
func run(t *testing.T, path string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish: %s", filepath.Base(path), args, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(out), code
}

// startToolPort serves the echo service, the health service and
// reflection on a shared port.
func startToolPort(t *testing.T) (string, *health.Server) {
	t.Helper()
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, echo{})
	hs := health.NewServer()
	health.Register(srv, hs)
	reflection.Register(grpcstub.Registrar(srv))
	port := grpcport.New(srv)
	lis := listen(t)
	done := make(chan error, 1)
	go func() { done <- port.Serve(lis) }()
	t.Cleanup(func() {
		port.Stop()
		<-done
	})
	return lis.Addr().String(), hs
}

// TestGRPCurl lists, describes and calls a muxrpc server's services with
// grpcurl, through the reflection service, over gRPC on the shared port.
func TestGRPCurl(t *testing.T) {
	grpcurl := tool(t, "grpcurl", "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4")
	addr, _ := startToolPort(t)
	out, code := run(t, grpcurl, "-plaintext", addr, "list")
	for _, want := range []string{"muxrpc.echo.v1.Echo", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("grpcurl list (exit %d) lacks %s:\n%s", code, want, out)
		}
	}
	out, code = run(t, grpcurl, "-plaintext", addr, "list", "muxrpc.echo.v1.Echo")
	if code != 0 || !strings.Contains(out, "muxrpc.echo.v1.Echo.Bidi") || !strings.Contains(out, "muxrpc.echo.v1.Echo.Unary") {
		t.Errorf("grpcurl list Echo (exit %d):\n%s", code, out)
	}
	out, code = run(t, grpcurl, "-plaintext", addr, "describe", "muxrpc.echo.v1.Echo")
	if code != 0 || !strings.Contains(out, "rpc ServerStream ( .muxrpc.echo.v1.ServerStreamRequest ) returns ( stream .muxrpc.echo.v1.EchoResponse )") {
		t.Errorf("grpcurl describe (exit %d):\n%s", code, out)
	}
	out, code = run(t, grpcurl, "-plaintext", "-H", "x-who: grpcurl", "-d", `{"message":"hi"}`, addr, "muxrpc.echo.v1.Echo/Unary")
	if code != 0 || !strings.Contains(out, `"message": "hi /muxrpc.echo.v1.Echo/Unary grpcurl"`) {
		t.Errorf("grpcurl call (exit %d):\n%s", code, out)
	}
	out, code = run(t, grpcurl, "-plaintext", "-d", `{"message":"s","count":2}`, addr, "muxrpc.echo.v1.Echo/ServerStream")
	if code != 0 || strings.Count(out, `"message": "s"`) != 2 {
		t.Errorf("grpcurl stream (exit %d):\n%s", code, out)
	}
	out, code = run(t, grpcurl, "-plaintext", "-d", `{"message":"fail"}`, addr, "muxrpc.echo.v1.Echo/Unary")
	if code == 0 || !strings.Contains(out, "FailedPrecondition") || !strings.Contains(out, "not now") {
		t.Errorf("grpcurl failing call (exit %d):\n%s", code, out)
	}
}

// TestGRPCHealthProbe checks a muxrpc server's health with
// grpc-health-probe, over gRPC on the shared port.
func TestGRPCHealthProbe(t *testing.T) {
	probe := tool(t, "grpc-health-probe", "github.com/grpc-ecosystem/grpc-health-probe@v0.4.62")
	addr, hs := startToolPort(t)
	out, code := run(t, probe, "-addr="+addr)
	if code != 0 || !strings.Contains(out, "SERVING") {
		t.Errorf("probe of the server (exit %d): %s", code, out)
	}
	hs.SetServingStatus("muxrpc.echo.v1.Echo", healthv1.HealthCheckResponse_NOT_SERVING)
	out, code = run(t, probe, "-addr="+addr, "-service=muxrpc.echo.v1.Echo")
	if code != 4 || !strings.Contains(out, "NOT_SERVING") { // 4: the probe's exit code for an unhealthy service
		t.Errorf("probe of a service not serving (exit %d): %s", code, out)
	}
	hs.SetServingStatus("muxrpc.echo.v1.Echo", healthv1.HealthCheckResponse_SERVING)
	if out, code := run(t, probe, "-addr="+addr, "-service=muxrpc.echo.v1.Echo"); code != 0 {
		t.Errorf("probe of a serving service (exit %d): %s", code, out)
	}
}
