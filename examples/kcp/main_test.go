package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kcpGoroutines...)
}

// kcpGoroutines are the goroutines kcp-go starts once per process and
// never ends, which goleak would report: the shards of its package-level
// timer scheduler (kcp.SystemTimedSched, a package variable started when
// the package initializes), blocked with (*TimedSched).run on top of their
// stacks; and the process-wide pool of workers that decode incoming
// packets, started with the first session, blocked in sync.Cond.Wait under
// postProcessWorker (hence IgnoreAnyFunction, since the top is the sync
// package's). Every session's own goroutines, and the relay's, end with it
// and are checked.
var kcpGoroutines = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/xtaci/kcp-go/v5.(*TimedSched).run"),
	goleak.IgnoreAnyFunction("github.com/xtaci/kcp-go/v5.postProcessWorker"),
}

// TestLossyLink runs the demo at 5% loss each way and 20 ms of delay each
// way, as `go run ./examples/kcp` does, and checks every answer: KCP
// recovers every lost packet, so each call succeeds.
func TestLossyLink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	o := options{loss: 0.05, delay: 20 * time.Millisecond, seed: 1, calls: 10}
	start := time.Now()
	if err := runBoth(ctx, &out, o); err != nil {
		t.Fatalf("%v; the demo printed:\n%s", err, out.String())
	}
	t.Logf("%d calls in %v:\n%s", o.calls+3, time.Since(start).Round(time.Millisecond), out.String())

	var want strings.Builder
	want.WriteString("client: the server called back: \"welcome over KCP\"\n")
	for i := range o.calls {
		fmt.Fprintf(&want, "unary: call %d\n", i)
	}
	for i := range 5 {
		fmt.Fprintf(&want, "server stream: tick #%d\n", i)
	}
	want.WriteString(`client: the server called back: "first"
client: the server called back: "second"
client: the server called back: "third"
announce: the server delivered 3 notifications to this client
`)
	got := out.String()
	if !strings.HasPrefix(got, want.String()) {
		t.Fatalf("the demo printed:\n%s\nwant first:\n%s", got, want.String())
	}
	last := strings.TrimPrefix(got, want.String())
	m := regexp.MustCompile(`^relay: dropped (\d+) of (\d+) packets \(-loss 0.05, -delay 20ms\)\n$`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("the demo's last line is %q, want the relay's count of drops", last)
	}
	var dropped, seen int
	fmt.Sscan(m[1], &dropped)
	fmt.Sscan(m[2], &seen)
	if dropped == 0 || seen == 0 {
		t.Errorf("the relay dropped %d of %d packets: the link was not lossy", dropped, seen)
	}
}

// TestServeUntilSignal checks the -listen mode: the server serves a client
// until its context ends, as on SIGINT or SIGTERM, and then stops
// gracefully.
func TestServeUntilSignal(t *testing.T) {
	lis, err := listenKCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, signal := context.WithCancel(context.Background())
	var serverOut bytes.Buffer
	served := make(chan error, 1)
	go func() { served <- serveUntilSignal(ctx, &serverOut, lis) }()
	o := options{calls: 2, seed: 1} // no loss, no delay
	if err := runClient(context.Background(), &syncWriter{w: io.Discard}, lis.Addr().String(), o); err != nil {
		t.Fatal(err)
	}
	signal()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serveUntilSignal returned %v after the signal, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop after the signal")
	}
	if want := "server: stopping, letting the calls in flight finish\n"; serverOut.String() != want {
		t.Errorf("the server printed %q, want %q", serverOut.String(), want)
	}
}
