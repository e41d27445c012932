package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the demo as `go run ./examples/agents` does and checks
// every line it prints.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := runBoth(ctx, &out, 5, "test secret"); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	// The stats lines end the output; their numbers vary from run to run.
	statsLine := regexp.MustCompile(`^stats (agent-[1-5]): native from 127\.0\.0\.1:\d+, no TLS, up \d+(\.\d+)?m?s, \d+ streams open, calls 0 out 0 in, (\d+) bytes sent, (\d+) received, no keepalive yet$`)
	lines := strings.SplitAfter(got, "\n")
	if len(lines) < 6 {
		t.Fatalf("the demo printed:\n%s", got)
	}
	stats := lines[len(lines)-6 : len(lines)-1]
	for i, line := range stats {
		m := statsLine.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
		if m == nil {
			t.Errorf("stats line %d: %q does not match %s", i+1, line, statsLine)
			continue
		}
		if want := fmt.Sprintf("agent-%d", i+1); m[1] != want {
			t.Errorf("stats line %d is %s's, want %s's", i+1, m[1], want)
		}
		sent, _ := strconv.Atoi(m[3])
		received, _ := strconv.Atoi(m[4])
		if sent < 50 || received < 50 { // a hello and at least one call each way
			t.Errorf("stats line %d: %d bytes sent, %d received", i+1, sent, received)
		}
	}
	got = strings.Join(lines[:len(lines)-6], "")
	want := `impostor refused: Unauthenticated
the hub has 5 agents: agent-1, agent-2, agent-3, agent-4, agent-5
agent-1 ran echo: hello from the hub
customer-42's 3 jobs ran on agent-4
agent-1: status agent-1, 1 commands run
agent-2: status agent-2, 0 commands run
agent-3: status agent-3, 0 commands run
agent-4: status agent-4, 3 commands run
agent-5: status agent-5, 0 commands run
`
	if got != want {
		t.Errorf("the demo printed:\n%s\nwant:\n%s", got, want)
	}
}

// TestHubAndAgentProcesses runs the hub and two agents as -listen and -connect
// do, in one process: the agents connect, the hub lists them and calls
// them, and everything stops with the context.
func TestHubAndAgentProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hubCtx, stopHub := context.WithCancel(ctx)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	var out syncBuffer
	hubDone := make(chan error, 1)
	go func() { hubDone <- runHub(hubCtx, &out, lis, "s", 100*time.Millisecond) }()
	agentCtx, stopAgents := context.WithCancel(ctx)
	agentsDone := make(chan error, 2)
	for _, name := range []string{"build-1", "build-2"} {
		go func() { agentsDone <- runAgent(agentCtx, addr, name, "s") }()
	}
	for !bytes.Contains(out.Bytes(), []byte("build-1: status build-1")) || !bytes.Contains(out.Bytes(), []byte("build-2: status build-2")) {
		select {
		case <-ctx.Done():
			t.Fatalf("the hub never called both agents; it printed:\n%s", out.Bytes())
		case <-time.After(20 * time.Millisecond):
		}
	}
	stopAgents()
	for range 2 {
		if err := <-agentsDone; err != nil {
			t.Errorf("an agent: %v", err)
		}
	}
	stopHub()
	if err := <-hubDone; err != nil {
		t.Errorf("the hub: %v", err)
	}
}

// syncBuffer is a bytes.Buffer that the hub writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what was written so far.
func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
