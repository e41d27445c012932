package mux

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// TestStatsBytes echoes payloads over a stream and checks that each
// side's byte counters cover them, and that once the session is idle
// what one side sent is exactly what the other received.
func TestStatsBytes(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			start := time.Now()
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			made := time.Now()
			ctx := testCtx(t, 10*time.Second)
			for _, st := range []SessionStats{c.Stats(), s.Stats()} {
				if st.Transport != tr {
					t.Errorf("Transport = %v, want %v", st.Transport, tr)
				}
				if st.Started.Before(start) || st.Started.After(made) {
					t.Errorf("Started = %v, not within [%v, %v]", st.Started, start, made)
				}
				if st.BytesSent == 0 || st.BytesReceived == 0 {
					t.Errorf("after the handshake: BytesSent %d, BytesReceived %d; want both > 0", st.BytesSent, st.BytesReceived)
				}
			}
			before := c.Stats()
			const up, down = 300 << 10, 100 << 10
			req := bytes.Repeat([]byte("q"), up)
			go func() {
				st, err := s.Accept(ctx)
				if err != nil {
					return
				}
				defer st.Close()
				io.Copy(io.Discard, st)
				if tr == Native { // smux has no CloseWrite: its client closed the stream
					st.Write(bytes.Repeat([]byte("a"), down))
				}
			}()
			st, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(req); err != nil {
				t.Fatal(err)
			}
			if tr == Smux {
				err = st.Close() // no CloseWrite on smux: the server reads to EOF
			} else {
				err = st.CloseWrite()
			}
			if err != nil {
				t.Fatal(err)
			}
			if tr == Native {
				got, err := io.ReadAll(st)
				if err != nil || len(got) != down {
					t.Fatalf("read %d bytes, %v; want %d", len(got), err, down)
				}
				st.Close()
			}
			waitFor(t, "the two sides' counters to match", func() bool {
				cs, ss := c.Stats(), s.Stats()
				return cs.StreamsOpen == 0 && ss.StreamsOpen == 0 &&
					cs.BytesSent == ss.BytesReceived && ss.BytesSent == cs.BytesReceived
			})
			cs, ss := c.Stats(), s.Stats()
			if sent := cs.BytesSent - before.BytesSent; sent < up {
				t.Errorf("client sent %d bytes for a %d-byte request", sent, up)
			}
			if tr == Native {
				if got := cs.BytesReceived - before.BytesReceived; got < down {
					t.Errorf("client received %d bytes for a %d-byte answer", got, down)
				}
			}
			// Framing costs little: a frame header per 16 KiB or more.
			if sent := cs.BytesSent - before.BytesSent; sent > up+up/50+1024 {
				t.Errorf("client sent %d bytes for a %d-byte request: more than framing explains", sent, up)
			}
			t.Logf("client sent %d received %d; server sent %d received %d", cs.BytesSent, cs.BytesReceived, ss.BytesSent, ss.BytesReceived)
		})
	}
}

// TestStatsStreamsOpen counts the streams open in both directions.
func TestStatsStreamsOpen(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ctx := testCtx(t, 10*time.Second)
			a, _ := openAccepted(t, ctx, c, s, []byte("1"))
			b, _ := openAccepted(t, ctx, s, c, []byte("2"))
			if n := c.Stats().StreamsOpen; n != 2 {
				t.Errorf("client StreamsOpen = %d, want 2", n)
			}
			if n := s.Stats().StreamsOpen; n != 2 {
				t.Errorf("server StreamsOpen = %d, want 2", n)
			}
			a.Close()
			b.Close()
		})
	}
}

// TestStatsKeepAliveRTT has keepalive ping every 50 ms: on the native
// transport its answers give LastRTT; smux's keepalive is never
// answered, so LastRTT stays 0 there.
func TestStatsKeepAliveRTT(t *testing.T) {
	cfg := &Config{KeepAliveInterval: 50 * time.Millisecond, KeepAliveTimeout: 5 * time.Second}
	t.Run("native", func(t *testing.T) {
		c, s := pair(t, cfg, cfg)
		if rtt := c.Stats().LastRTT; rtt != 0 {
			t.Errorf("LastRTT = %v before any ping", rtt)
		}
		waitFor(t, "a keepalive answered", func() bool {
			return c.Stats().LastRTT > 0 && s.Stats().LastRTT > 0
		})
		if rtt := c.Stats().LastRTT; rtt > 5*time.Second {
			t.Errorf("LastRTT = %v", rtt)
		}
	})
	t.Run("smux", func(t *testing.T) {
		c, s := pair(t, withTransport(cfg, Smux), withTransport(cfg, Smux))
		time.Sleep(200 * time.Millisecond) // a few keepalive intervals
		if rtt := c.Stats().LastRTT; rtt != 0 {
			t.Errorf("client LastRTT = %v on smux", rtt)
		}
		if rtt := s.Stats().LastRTT; rtt != 0 {
			t.Errorf("server LastRTT = %v on smux", rtt)
		}
	})
}

// TestStatsPingRTT checks that Ping's round trip is the last one.
func TestStatsPingRTT(t *testing.T) {
	c, _ := pair(t, nil, nil)
	rtt, err := c.Ping(testCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().LastRTT; got != rtt {
		t.Errorf("LastRTT = %v, Ping said %v", got, rtt)
	}
}

// TestStatsAfterEnd reads the counters of a session that has ended.
func TestStatsAfterEnd(t *testing.T) {
	c, s := pair(t, nil, nil)
	c.Close()
	<-s.Done()
	cs, ss := c.Stats(), s.Stats()
	if cs.BytesSent != ss.BytesReceived {
		t.Errorf("client sent %d, server received %d", cs.BytesSent, ss.BytesReceived)
	}
	if cs.StreamsOpen != 0 {
		t.Errorf("StreamsOpen = %d after the end", cs.StreamsOpen)
	}
}

// BenchmarkStats measures a snapshot; it allocates nothing.
func BenchmarkStats(b *testing.B) {
	c, _ := pair(b, nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		c.Stats()
	}
}
