package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the demo and checks every line it prints.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := runBoth(ctx, &out); err != nil {
		t.Fatal(err)
	}
	want := `hub -> agent: agent is up (GET /status)
agent -> hub rpc: rpc beside http
agent -> hub: hub is up (GET /status)
`
	if got := out.String(); got != want {
		t.Errorf("the demo printed:\n%s\nwant:\n%s", got, want)
	}
}
