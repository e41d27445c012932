package mux

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestKeepAliveSurvivesSlowLink sends from four writers at once over a
// link of 128 KiB/s, with a KeepAliveTimeout of one second: one batch of
// the send buffer takes longer than that to cross, but bytes keep leaving
// and the peer keeps reading, so the session lives.
func TestKeepAliveSurvivesSlowLink(t *testing.T) {
	const rate, run = 128 << 10, 3 * time.Second
	ka := &Config{KeepAliveInterval: 200 * time.Millisecond, KeepAliveTimeout: time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := newProxy(t, ln.Addr().String())
	p.throttle(toServer, rate)
	accepted := make(chan sessionResult, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			accepted <- sessionResult{err: err}
			return
		}
		s, err := Server(conn, ka)
		accepted <- sessionResult{s: s, err: err}
	}()
	ctx := testCtx(t, 30*time.Second)
	c, err := Dial(ctx, "tcp", p.addr(), ka)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	s := r.s
	defer s.Kill()
	c.Conn().(*net.TCPConn).SetWriteBuffer(8 << 10)
	serve(t, s, TypeDefault, func(st *Stream) { io.Copy(io.Discard, st) })

	stop := time.Now().Add(run)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := c.Open(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			defer st.Close()
			chunk := make([]byte, 64<<10)
			for time.Now().Before(stop) {
				st.SetWriteDeadline(stop)
				if _, err := st.Write(chunk); err != nil {
					if c.Err() != nil {
						t.Errorf("writer: %v (session: %v)", err, c.Err())
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, sess := range []*Session{c, s} {
		if err := sess.Err(); err != nil {
			t.Fatalf("session ended on a slow but live link: %v", err)
		}
	}
}
