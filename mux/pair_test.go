package mux

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// transports lists the transports every behaviour test runs on.
var transports = []Transport{Native, Smux}

// pair returns the client and server sessions of one loopback TCP
// connection, closed when the test ends.
func pair(t testing.TB, client, server *Config) (*Session, *Session) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		s   *Session
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- result{err: err}
			return
		}
		s, err := Server(c, server)
		accepted <- result{s, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := Dial(ctx, "tcp", ln.Addr().String(), client)
	if err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		cs.Kill()
		t.Fatal(r.err)
	}
	t.Cleanup(func() {
		cs.Kill()
		r.s.Kill()
	})
	return cs, r.s
}

// withTransport returns cfg (copied, or new) set to transport tr.
func withTransport(cfg *Config, tr Transport) *Config {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Transport = tr
	return &c
}

// testCtx returns a context that ends when the test would otherwise hang.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// openAccepted opens a stream of c, writes first on it, and accepts it on
// s; both ends are closed when the test ends.
func openAccepted(t testing.TB, ctx context.Context, c, s *Session, first []byte) (st, peer *Stream) {
	t.Helper()
	st, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Write(first); err != nil {
		t.Fatal(err)
	}
	peer, err = s.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	return st, peer
}
