package mux

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// cancelOnClear is a connection that ends a handshake's context at the
// worst moment: when the handshake clears the connection's deadline,
// having succeeded. It then gives the context's end a moment to set a
// deadline of its own, as it would if it came a little later.
type cancelOnClear struct {
	net.Conn
	cancel  context.CancelFunc
	mu      sync.Mutex
	cleared bool
	late    chan struct{} // closed when a deadline is set after the clearing
	once    sync.Once
}

func (c *cancelOnClear) SetDeadline(t time.Time) error {
	err := c.Conn.SetDeadline(t)
	c.mu.Lock()
	clearing := t.IsZero() && !c.cleared
	late := !t.IsZero() && c.cleared
	c.cleared = c.cleared || clearing
	c.mu.Unlock()
	if late {
		c.once.Do(func() { close(c.late) })
	}
	if clearing {
		c.cancel()
		select {
		case <-c.late:
		case <-time.After(time.Second):
		}
	}
	return err
}

// TestHandshakeCancelledAsItSucceedsLeavesNoDeadline ends a handshake's
// context just as the handshake succeeds: the session either fails with
// the context's error or works, never one whose connection was left with
// a past deadline.
func TestHandshakeCancelledAsItSucceedsLeavesNoDeadline(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			cfg := withTransport(nil, tr)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			served := make(chan sessionResult, 1)
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					served <- sessionResult{err: err}
					return
				}
				s, err := Server(conn, cfg)
				served <- sessionResult{s: s, err: err}
			}()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			spy := &cancelOnClear{Conn: conn, cancel: cancel, late: make(chan struct{})}
			c, err := newSession(ctx, spy, cfg, true)
			r := <-served
			if r.err != nil {
				t.Fatal(r.err)
			}
			t.Cleanup(func() { r.s.Kill() })
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("handshake: %v, want context.Canceled or success", err)
				}
				return
			}
			t.Cleanup(func() { c.Kill() })
			serveEcho(t, r.s)
			if err := echo(testCtx(t, 5*time.Second), c, []byte("no stale deadline")); err != nil {
				t.Fatalf("a session whose handshake succeeded as its context ended: %v", err)
			}
		})
	}
}

// TestHandshakeSettingsBound sends SETTINGS frames around the bound of
// every control frame, 16 384 bytes: the largest that fits (2 730 entries,
// unknown ones but the last) is accepted, the next size fails the
// handshake with ErrProtocol.
func TestHandshakeSettingsBound(t *testing.T) {
	settingsOf := func(entries int) []byte {
		var p []byte
		for range entries - 1 {
			p = appendSetting(p, 0x7fff, 1) // unknown: ignored
		}
		p = appendSetting(p, settingMaxFrameSize, 1<<14)
		return append(appendPreface(nil), frame(frameSettings, 0, 0, p)...)
	}
	for _, tc := range []struct {
		entries int
		ok      bool
	}{{maxControlPayload / settingLen, true}, {maxControlPayload/settingLen + 1, false}} {
		p, res := rawServerSession(t, nil, settingsOf(tc.entries))
		var r sessionResult
		select {
		case r = <-res:
		case <-time.After(5 * time.Second):
			t.Fatal("Server did not return")
		}
		switch {
		case tc.ok && r.err != nil:
			t.Fatalf("SETTINGS of %d bytes: %v", tc.entries*settingLen, r.err)
		case tc.ok && r.s.peer.maxFrameSize != 1<<14:
			t.Fatalf("SETTINGS of %d bytes: the last entry was not read", tc.entries*settingLen)
		case !tc.ok && !errors.Is(r.err, ErrProtocol):
			t.Fatalf("SETTINGS of %d bytes: %v, want ErrProtocol", tc.entries*settingLen, r.err)
		}
		if tc.ok {
			p.readHello()
		}
	}
}
