package mux

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// TestHandleType serves streams with HandleType: every stream of the type
// reaches the handler once, with its data; handlers that block do not
// hold up the reading of the session, nor the other handlers; streams of
// other types still go to AcceptType; and streams that waited for an
// accept before HandleType go to the handler.
func TestHandleType(t *testing.T) {
	const blocked, echoed = 8, 200
	c, s := pair(t, nil, nil)
	ctx := testCtx(t, 20*time.Second)

	// A stream that waits in the accept queue before HandleType is called.
	early, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := early.WriteLast([]byte("early")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the early stream to arrive", func() bool { return s.NumStreams() == 1 })

	release := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	var handlers sync.WaitGroup
	s.HandleType(TypeDefault, func(st *Stream) {
		handlers.Add(1)
		defer handlers.Done()
		defer st.Close()
		msg, err := io.ReadAll(st)
		if err != nil {
			t.Errorf("handler: %v", err)
			return
		}
		mu.Lock()
		seen[string(msg)]++
		mu.Unlock()
		if bytes.HasPrefix(msg, []byte("block")) {
			<-release
		}
		st.WriteLast(msg)
	})

	var calls sync.WaitGroup
	call := func(msg string) {
		defer calls.Done()
		st, err := c.Open(ctx)
		if err != nil {
			t.Errorf("%s: %v", msg, err)
			return
		}
		defer st.Close()
		if _, err := st.WriteLast([]byte(msg)); err != nil {
			t.Errorf("%s: %v", msg, err)
			return
		}
		got, err := io.ReadAll(st)
		if err != nil || string(got) != msg {
			t.Errorf("%s: got %q, %v", msg, got, err)
		}
	}
	for i := range blocked {
		calls.Add(1)
		go call(fmt.Sprintf("block %d", i))
	}
	// The blocked handlers hold nothing up: every echo completes while
	// they wait, and so does a stream of another type.
	var echoes sync.WaitGroup
	for i := range echoed {
		echoes.Add(1)
		calls.Add(1)
		go func() {
			defer echoes.Done()
			call(fmt.Sprintf("echo %d", i))
		}()
	}
	echoes.Wait()
	other, err := c.OpenType(ctx, TypeNet)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.WriteLast([]byte("other"))
	accepted, err := s.AcceptType(ctx, TypeNet)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(accepted); string(got) != "other" {
		t.Fatalf("the stream of another type: got %q", got)
	}
	accepted.Close()

	close(release)
	calls.Wait()
	if got, err := io.ReadAll(early); err != nil || string(got) != "early" {
		t.Fatalf("the stream opened before HandleType: got %q, %v", got, err)
	}
	early.Close()
	handlers.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != blocked+echoed+1 {
		t.Fatalf("the handler saw %d distinct streams, want %d", len(seen), blocked+echoed+1)
	}
	for msg, n := range seen {
		if n != 1 {
			t.Fatalf("the handler saw %q %d times", msg, n)
		}
	}
}
