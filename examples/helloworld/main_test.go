package main

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the demo as `go run ./examples/helloworld` does and checks
// every line it prints.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := runBoth(ctx, &out); err != nil {
		t.Fatal(err)
	}
	want := `server: SayHello("world")
Greeting: Hello, world
`
	if got := out.String(); got != want {
		t.Errorf("the demo printed:\n%s\nwant:\n%s", got, want)
	}
}

// TestListenAndConnect runs the server as -listen does, greets the world
// through it twice as -connect does, and stops the server as SIGINT does,
// by ending its context: serve returns nil once the stop is done.
func TestListenAndConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var srvOut, cliOut bytes.Buffer
	srvCtx, interrupt := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(srvCtx, lis, &srvOut) }()
	for range 2 {
		if err := greet(ctx, &cliOut, lis.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	interrupt()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the server did not stop")
	}
	if got, want := cliOut.String(), "Greeting: Hello, world\nGreeting: Hello, world\n"; got != want {
		t.Errorf("the client printed:\n%s\nwant:\n%s", got, want)
	}
	if got, want := srvOut.String(), "server: SayHello(\"world\")\nserver: SayHello(\"world\")\n"; got != want {
		t.Errorf("the server printed:\n%s\nwant:\n%s", got, want)
	}
	if err := greet(ctx, &cliOut, lis.Addr().String()); err == nil {
		t.Error("a stopped server still greets")
	}
}
