package mux

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// dialSilent opens n connections to addr that never send a byte; they are
// closed when the test ends.
func dialSilent(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("silent connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	return conns
}

// isClosedByPeer reads c until it ends and reports whether the peer closed
// it within d, rather than d passing first.
func isClosedByPeer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}
