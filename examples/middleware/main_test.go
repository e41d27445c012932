package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the demo as `go run ./examples/middleware` does and checks
// every line it prints.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := runBoth(ctx, &out); err != nil {
		t.Fatal(err)
	}
	want := `[server log] level=INFO msg="finished call" grpc.service=muxrpc.echo.v1.Echo grpc.method=Unary grpc.code=Unauthenticated grpc.error="rpc error: code = Unauthenticated desc = Request unauthenticated with bearer"
client: Unary without a token: rpc error: code = Unauthenticated desc = Request unauthenticated with bearer
[server log] level=INFO msg="finished call" grpc.service=muxrpc.echo.v1.Echo grpc.method=Unary grpc.code=OK
client: Unary with the token: hello
[server log] level=INFO msg="finished call" grpc.service=muxrpc.echo.v1.Echo grpc.method=ServerStream grpc.code=OK
client: ServerStream: tick #0, tick #1
[server log] level=ERROR msg="finished call" grpc.service=muxrpc.echo.v1.Echo grpc.method=Unary grpc.code=Internal grpc.error="rpc error: code = Internal desc = recovered from panic: asked to"
client: Unary that panics: rpc error: code = Internal desc = recovered from panic: asked to
client: the server called back: "first"
[client log] level=INFO msg="finished call" grpc.service=muxrpc.echo.v1.Notifier grpc.method=Notify grpc.code=OK
client: the server called back: "second"
[client log] level=INFO msg="finished call" grpc.service=muxrpc.echo.v1.Notifier grpc.method=Notify grpc.code=OK
[server log] level=INFO msg="finished call" grpc.service=muxrpc.echo.v1.Echo grpc.method=Announce grpc.code=OK
client: Announce: the server delivered 2 notifications
client: /metrics: grpc_server_handled_total{grpc_code="Internal",grpc_method="Unary",grpc_service="muxrpc.echo.v1.Echo",grpc_type="unary"} 1
client: /metrics: grpc_server_handled_total{grpc_code="OK",grpc_method="Announce",grpc_service="muxrpc.echo.v1.Echo",grpc_type="unary"} 1
client: /metrics: grpc_server_handled_total{grpc_code="OK",grpc_method="ServerStream",grpc_service="muxrpc.echo.v1.Echo",grpc_type="server_stream"} 1
client: /metrics: grpc_server_handled_total{grpc_code="OK",grpc_method="Unary",grpc_service="muxrpc.echo.v1.Echo",grpc_type="unary"} 1
client: /metrics: grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="Unary",grpc_service="muxrpc.echo.v1.Echo",grpc_type="unary"} 1
client: /metrics: muxrpc_peers 1
`
	if got := out.String(); got != want {
		t.Errorf("the demo printed:\n%s\nwant:\n%s", got, want)
	}
}

// TestServeUntilSignal checks the -listen mode: the server serves a client
// until its context ends, as on SIGINT or SIGTERM, and then stops
// gracefully, Serve returning nil.
func TestServeUntilSignal(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, signal := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveUntilSignal(ctx, io.Discard, lis) }()
	if err := runClient(context.Background(), io.Discard, lis.Addr().String()); err != nil {
		t.Fatal(err)
	}
	signal()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serveUntilSignal returned %v after the signal, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop after the signal")
	}
}
