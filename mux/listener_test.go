package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// needFiles makes sure the process may open n files, raising its soft
// limit for the test if it must, or skips the test; under CI, where the
// limit is the project's to set, it fails instead.
func needFiles(t *testing.T, n uint64) {
	t.Helper()
	skip := t.Skipf // outside CI only
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		skip("no file limit to check: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		skip("the test needs %d open files; the hard limit is %d", n, lim.Max)
	}
	raised := lim
	raised.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		skip("the test needs %d open files: %v", n, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
}

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

// serveSessions accepts l's sessions and echoes on each until the test
// ends.
func serveSessions(t *testing.T, l *Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s, err := l.Accept()
			if err != nil {
				return
			}
			serveEcho(t, s)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
}

// liveHeap returns the bytes of live heap objects, after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// isClosedByPeer reads c until it ends and reports whether the peer closed
// it within d, rather than d passing first.
func isClosedByPeer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestListenerSilentConnectionsDelayNoClient opens more silent connections
// than a Listener runs handshakes at once: they cost no read buffer, the
// Listener sheds the oldest of them, and a real client then connects and
// makes a round trip at once, not after the silent ones' handshake
// timeout.
func TestListenerSilentConnectionsDelayNoClient(t *testing.T) {
	const silent = maxHandshakes + 76
	needFiles(t, 2*silent+512)
	const hsTimeout = 30 * time.Second
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			cfg := withTransport(&Config{HandshakeTimeout: hsTimeout}, tr)
			l, err := Listen("tcp", "127.0.0.1:0", cfg)
			if err != nil {
				t.Fatal(err)
			}
			serveSessions(t, l)

			heap0, g0 := liveHeap(), runtime.NumGoroutine()
			conns := dialSilent(t, l.Addr().String(), silent)
			// Each connection in its handshake has a goroutine.
			waitFor(t, "the Listener to take the silent connections", func() bool {
				return runtime.NumGoroutine()-g0 >= maxHandshakes
			})
			grown := int64(liveHeap()) - int64(heap0)
			t.Logf("%d silent connections hold %d KiB of heap", silent, grown>>10)
			if grown > 16<<20 {
				t.Errorf("%d silent connections hold %d KiB of heap, %d bytes each", silent, grown>>10, grown/silent)
			}

			start := time.Now()
			ctx := testCtx(t, 10*time.Second)
			c, err := Dial(ctx, "tcp", l.Addr().String(), cfg)
			if err != nil {
				t.Fatalf("a client behind %d silent connections: %v after %v", silent, err, time.Since(start))
			}
			t.Cleanup(func() { c.Kill() })
			if err := echo(ctx, c, []byte("not delayed")); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("a client behind %d silent connections needed %v; the handshake timeout is %v", silent, d, hsTimeout)
			}
			if !isClosedByPeer(conns[0], 5*time.Second) {
				t.Fatal("the oldest silent connection is still open")
			}
		})
	}
}

// TestListenerBoundsSessionsWaitingForAccept connects clients to a
// Listener that nobody accepts from: once a queue's worth of sessions is
// established, further clients wait in the kernel's backlog (one more may
// get in, taken while the queue filled); once the application accepts the
// sessions, the Listener takes connections again.
func TestListenerBoundsSessionsWaitingForAccept(t *testing.T) {
	const extra = 8
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			cfg := withTransport(&Config{HandshakeTimeout: 10 * time.Second}, tr)
			l, err := Listen("tcp", "127.0.0.1:0", cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			addr := l.Addr().String()

			var mu sync.Mutex
			var clients []*Session
			t.Cleanup(func() {
				for _, c := range clients {
					c.Kill()
				}
			})
			for i := range maxReady {
				c, err := Dial(testCtx(t, 10*time.Second), "tcp", addr, cfg)
				if err != nil {
					t.Fatalf("client %d, with room in the queue: %v", i, err)
				}
				clients = append(clients, c)
			}
			waitFor(t, "the queue to fill", func() bool { return len(l.ready) == maxReady })

			var dials sync.WaitGroup
			for range extra {
				dials.Add(1)
				go func() {
					defer dials.Done()
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					if c, err := Dial(ctx, "tcp", addr, cfg); err == nil {
						mu.Lock()
						clients = append(clients, c)
						mu.Unlock()
					}
				}()
			}
			dials.Wait()
			if n := len(clients) - maxReady; n > 1 {
				t.Fatalf("%d more sessions established with the queue of %d full and nobody accepting", n, maxReady)
			}
			for range clients {
				serveEcho(t, acceptSession(t, l, 5*time.Second))
			}

			// Accepting made room: a new client gets in.
			ctx := testCtx(t, 10*time.Second)
			c, err := Dial(ctx, "tcp", addr, cfg)
			if err != nil {
				t.Fatalf("a client after the queue drained: %v", err)
			}
			clients = append(clients, c)
			for {
				// Connections that gave up while the Listener waited may
				// have become sessions too.
				s := acceptSession(t, l, 5*time.Second)
				if s.RemoteAddr().String() == c.LocalAddr().String() {
					serveEcho(t, s)
					break
				}
			}
			if err := echo(ctx, c, []byte("room again")); err != nil {
				t.Fatal(err)
			}
		})
	}
}
