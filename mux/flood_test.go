package mux

import (
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestControlFloodFromPeerThatDoesNotReadEndsSession has a raw peer that
// never reads send frames that the session must answer, as fast as it
// can: PINGs (each answered with an ACK), and streams past the limit
// (each refused with a RESET). Control frames never wait for room in the
// send buffer, so the answers pile up there once the connection is full;
// past 1.5 MiB pending (PROTOCOL.md, section 5) the session ends with
// ErrProtocol rather than buffer more. The session's heap in use stays
// within a few times that, and another session of the process is not
// disturbed.
func TestControlFloodFromPeerThatDoesNotReadEndsSession(t *testing.T) {
	floods := []struct {
		name  string
		frame func(b []byte, i int) []byte
	}{
		{"pings", func(b []byte, i int) []byte { return append(b, pingFrame(uint64(i), false)...) }},
		{"streams past the limit", func(b []byte, i int) []byte {
			return append(b, openFrame(uint32(2*i+1), TypeDefault, nil, false)...)
		}},
	}
	healthy := healthyPair(t)
	for _, fl := range floods {
		t.Run(fl.name, func(t *testing.T) {
			p, s := rawClientOf(t, &Config{MaxIncomingStreams: 1})
			serveEcho(t, s)
			// Small kernel buffers, so that what the session cannot send
			// piles up in its own buffer soon. (Not smaller than a few of
			// loopback's 64 KiB segments on the receiving end: there Linux
			// drops whole segments, ACKs with them, and the flood's own
			// direction stalls in retransmission backoff.)
			s.conn.(*net.TCPConn).SetWriteBuffer(8 << 10)
			p.conn.(*net.TCPConn).SetReadBuffer(256 << 10)

			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse
			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()

			start := time.Now()
			sent := 0
			var b []byte
			for s.Err() == nil && time.Since(start) < 30*time.Second {
				b = b[:0]
				for range 1024 {
					b = fl.frame(b, sent)
					sent++
				}
				p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := p.conn.Write(b); err != nil {
					break // the session closed the connection
				}
			}
			err := waitDone(t, s, 10*time.Second)
			close(stop)
			<-sampled
			grown := int64(peak.Load()) - int64(base)
			t.Logf("%d frames in %v ended the session: %v; heap in use grew by up to %d KiB", sent, time.Since(start).Round(time.Millisecond), err, grown>>10)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("the session ended with %v, want ErrProtocol", err)
			}
			if bound := int64(4*controlBufferLimit + 4<<20); grown > bound {
				t.Errorf("the session's heap in use grew by %d KiB, bound %d KiB", grown>>10, bound>>10)
			}
			healthy(t)
		})
	}
}
