//go:build unix

package mux

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"
)

// TestReaderWaitsHoldingNoBuffer reads a TCP connection through a
// connReader, which on Unix systems waits on the descriptor: it holds a buffer while bytes wait in it, even part of a
// frame, and none once it has consumed them all and waits for more.
func TestReaderWaitsHoldingNoBuffer(t *testing.T) {
	a, b := tcpConns(t)
	var heard atomic.Int64
	r := newConnReader(b, &heard, new(atomic.Uint64))
	if r.raw == nil {
		t.Fatal("a TCP connection on a Unix system is read without raw reads")
	}
	waitBriefly := func(what string) {
		t.Helper()
		b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		defer b.SetReadDeadline(time.Time{})
		if _, err := r.Peek(r.Buffered() + 1); !isTimeout(err) {
			t.Fatalf("%s: Peek found %v, want a timeout", what, err)
		}
	}
	if _, err := a.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	if p, err := r.Peek(5); err != nil || string(p) != "hello" {
		t.Fatalf("Peek(5) = %q, %v", p, err)
	}
	if heard.Load() == 0 {
		t.Error("bytes arrived unheard: keepalive would not know")
	}
	if r.box == nil {
		t.Fatal("holds no buffer with bytes unread")
	}
	if n, err := r.Discard(6); n != 6 || err != nil {
		t.Fatalf("Discard(6) = %d, %v", n, err)
	}
	waitBriefly("with part of the input unread")
	if r.box == nil || r.Buffered() != 5 {
		t.Fatalf("waiting with 5 bytes unread, the reader holds %d (buffer %v)", r.Buffered(), r.box != nil)
	}
	if n, err := r.Discard(5); n != 5 || err != nil {
		t.Fatalf("Discard(5) = %d, %v", n, err)
	}
	waitBriefly("with all consumed")
	if r.box != nil {
		t.Fatal("waits for bytes holding a buffer")
	}

	// Large reads go straight into the caller's slice, holding no buffer
	// either, and bytes arriving during a wait are found.
	go a.Write(bytes.Repeat([]byte("x"), readBufferSize))
	big := make([]byte, readBufferSize)
	n, err := r.Read(big)
	if err != nil || n == 0 || r.box != nil {
		t.Fatalf("Read of %d bytes = %d, %v, holding a buffer %v", len(big), n, err, r.box != nil)
	}
}

// TestSendBuffersGoBackWhenEmpty checks that a session holds no send
