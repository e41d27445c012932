package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the demo as `go run ./examples/callbacks` does and checks
// every line it prints.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := runBoth(ctx, &out); err != nil {
		t.Fatal(err)
	}
	want := `client: the server called back: "welcome, tcp client"
unary: hello
server stream: tick #0
server stream: tick #1
server stream: tick #2
client stream: one,two,three
bidi: ping
bidi: pong
client: the server called back: "first"
client: the server called back: "second"
announce: the server delivered 2 notifications to this client
`
	if got := out.String(); got != want {
		t.Errorf("the demo printed:\n%s\nwant:\n%s", got, want)
	}
}

// TestServesReflection checks that the server serves gRPC's reflection
// service, which muxrpcurl lists and describes its services with, beside
// Echo.
func TestServesReflection(t *testing.T) {
	info := newServer(io.Discard).GetServiceInfo()
	for _, name := range []string{"muxrpc.echo.v1.Echo", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} {
		if _, ok := info[name]; !ok {
			t.Errorf("the server does not serve %s", name)
		}
	}
}
