package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates healthv1's code in memory and
// compares it with the committed file, which goes stale when gRPC's
// health.proto or the generator changes.
func TestGeneratedCodeIsFresh(t *testing.T) {
	name, fresh, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatalf("%v: run go generate ./rpc/health/...", err)
	}
	if !bytes.Equal(committed, fresh) {
		t.Fatalf("%s is stale: run go generate ./rpc/health/...", name)
	}
}
