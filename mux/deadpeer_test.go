package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Directions a proxy forwards.
const (
	toServer = 0
	toClient = 1
)

// proxy forwards TCP connections to a target and can stop forwarding a
// direction while both connections stay open: from the other end, a peer
// that went silent. Closing the proxy closes every connection.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   sync.Cond
	paused [2]bool
	rate   [2]int // bytes per second a direction forwards; 0: as fast as it can
	closed bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.cond.L = &p.mu
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			down.Close()
			up.Close()
			return
		}
		p.conns = append(p.conns, down, up)
		if p.rate[toServer] > 0 { // hold back the sender, not the kernel
			down.(*net.TCPConn).SetReadBuffer(8 << 10)
		}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(toServer, down, up)
		go p.pump(toClient, up, down)
	}
}

// pump copies src to dst, holding what it read while its direction is
// paused. Either side's end ends both.
func (p *proxy) pump(dir int, src, dst net.Conn) {
	defer p.wg.Done()
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		p.mu.Lock()
		rate := p.rate[dir]
		p.mu.Unlock()
		chunk := buf
		if rate > 0 {
			chunk = buf[:4<<10]
		}
		n, err := src.Read(chunk)
		if n > 0 {
			p.mu.Lock()
			for p.paused[dir] && !p.closed {
				p.cond.Wait()
			}
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
			if rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
		}
		if err != nil {
			return
		}
	}
}

// pause stops (or, with on false, resumes) forwarding in direction dir.
func (p *proxy) pause(dir int, on bool) {
	p.mu.Lock()
	p.paused[dir] = on
	p.cond.Broadcast()
	p.mu.Unlock()
}

// throttle limits direction dir to rate bytes per second, for
// connections made from now on (their read buffer is made small).
func (p *proxy) throttle(dir, rate int) {
	p.mu.Lock()
	p.rate[dir] = rate
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	conns := p.conns
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// proxyPair returns the client and server sessions of one connection that
// runs through a proxy.
func proxyPair(t testing.TB, client, server *Config) (*Session, *Session, *proxy) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := newProxy(t, ln.Addr().String())
	accepted := make(chan sessionResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- sessionResult{err: err}
			return
		}
		s, err := Server(c, server)
		accepted <- sessionResult{s: s, err: err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := Dial(ctx, "tcp", p.addr(), client)
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
	return cs, r.s, p
}

// TestKeepAliveDetectsSilentPeer stops a proxy from forwarding anything,
// leaving the connection open: keepalive ends the session within about
// KeepAliveTimeout with ErrKeepAliveTimeout, and a blocked Read, Write
// (waiting for window), Open (waiting at the peer's stream limit) and
// Accept all return promptly with that error.
func TestKeepAliveDetectsSilentPeer(t *testing.T) {
	const interval, timeout = 50 * time.Millisecond, 300 * time.Millisecond
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			ka := Config{KeepAliveInterval: interval, KeepAliveTimeout: timeout}
			scfg := ka
			scfg.MaxIncomingStreams, scfg.StreamWindow = 2, 4<<10
			c, s, p := proxyPair(t, withTransport(&ka, tr), withTransport(&scfg, tr))
			serve(t, s, TypeDefault, func(*Stream) { <-s.Done() }) // takes streams, never reads
			ctx := testCtx(t, 20*time.Second)

			// A live session with keepalive on stays up while idle.
			time.Sleep(2 * timeout)
			if err := c.Err(); err != nil {
				t.Fatalf("an idle session with a live peer ended: %v", err)
			}

			a, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, st := range []*Stream{a, b} {
				if _, err := st.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			type result struct {
				what string
				err  error
			}
			results := make(chan result, 4)
			var wg sync.WaitGroup
			t.Cleanup(func() { c.Kill(); wg.Wait() })
			run := func(what string, f func() error) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- result{what, f()}
				}()
			}
			run("Write", func() error { _, err := a.Write(make([]byte, 4<<20)); return err })
			run("Read", func() error { _, err := b.Read(make([]byte, 1)); return err })
			run("Accept", func() error { _, err := c.Accept(ctx); return err })
			calls := 3
			if tr == Native { // smux knows no stream limit, so its Open never waits
				run("Open", func() error { _, err := c.Open(ctx); return err })
				calls++
			}
			time.Sleep(50 * time.Millisecond) // let them block
			select {
			case r := <-results:
				t.Fatalf("%s returned before the peer went silent: %v", r.what, r.err)
			default:
			}

			silent := time.Now()
			p.pause(toServer, true)
			p.pause(toClient, true)
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("keepalive did not end the session with a silent peer")
			}
			took := time.Since(silent)
			// The last frame may have arrived up to an interval or two
			// before the pause; the check runs every quarter interval.
			if took < timeout/2 || took > timeout+interval+time.Second {
				t.Errorf("silent peer detected after %v, KeepAliveTimeout is %v", took, timeout)
			}
			if err := c.Err(); !errors.Is(err, ErrKeepAliveTimeout) {
				t.Fatalf("session error %v, want ErrKeepAliveTimeout", err)
			}
			for range calls {
				select {
				case r := <-results:
					if !errors.Is(r.err, ErrKeepAliveTimeout) {
						t.Errorf("blocked %s returned %v, want ErrKeepAliveTimeout", r.what, r.err)
					}
					if r.what == "Open" && !IsRetrySafe(r.err) {
						t.Errorf("Open failed with %v, which is not retry-safe", r.err)
					}
				case <-time.After(time.Second):
					t.Fatal("a blocked call did not return within 1s of the session's end")
				}
			}
		})
	}
}

// TestClosedConnNoticed ends the peer abruptly: the session notices at
// once, its error wraps io.EOF (or ECONNRESET), and blocked calls return.
func TestClosedConnNoticed(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String()+"/peer Kill", func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ctx := testCtx(t, 10*time.Second)
			st, peer := openAccepted(t, ctx, c, s, []byte("x"))
			if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			readErr := make(chan error, 1)
			go func() {
				_, err := st.Read(make([]byte, 1))
				readErr <- err
			}()
			killed := time.Now()
			s.Kill()
			// A peer that closes its socket with input unread makes the
			// kernel send a reset instead of a FIN: both mean it is gone.
			if err := waitDone(t, c, 2*time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("session error %v, want io.EOF or ECONNRESET", err)
			}
			if d := time.Since(killed); d > time.Second {
				t.Errorf("closed connection noticed after %v", d)
			}
			select {
			case err := <-readErr:
				if err == nil {
					t.Fatal("blocked Read returned no error")
				}
			case <-time.After(time.Second):
				t.Fatal("blocked Read did not return")
			}
			if !errors.Is(s.Err(), ErrSessionClosed) {
				t.Errorf("killed side's error %v, want ErrSessionClosed", s.Err())
			}
		})
	}
	t.Run("native/raw conn closed", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		raw := make(chan net.Conn, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				raw <- nil
				return
			}
			conn.Write(appendSettings(appendPreface(nil), rawSettings))
			raw <- conn
		}()
		c, err := Dial(testCtx(t, 5*time.Second), "tcp", ln.Addr().String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Kill()
		conn := <-raw
		if conn == nil {
			t.Fatal("accept failed")
		}
		acceptErr := make(chan error, 1)
		go func() {
			_, err := c.Accept(context.Background())
			acceptErr <- err
		}()
		// Read the client's hello before closing, so nothing unread makes
		// the close a reset.
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadFull(conn, make([]byte, prefaceLen+frameHeaderLen+3*settingLen))
		conn.Close()
		if err := waitDone(t, c, 2*time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("session error %v, want io.EOF", err)
		}
		select {
		case err := <-acceptErr:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("blocked Accept returned %v, want io.EOF", err)
			}
		case <-time.After(time.Second):
			t.Fatal("blocked Accept did not return")
		}
	})
}

// TestEndOfInputAfterAFailedWriteIsThatFailure checks the session's error
// when a peer's reset reached the writer first and the reader then read
// an end of input, as happens when the peer resets the connection while
// this side writes: the session ends with the reset, not with a clean
// close, on both transports.
func TestEndOfInputAfterAFailedWriteIsThatFailure(t *testing.T) {
	reset := &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			cs, _ := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			if err := cs.connError(io.EOF, 0); !errors.Is(err, io.EOF) {
				t.Fatalf("end of input with no failed write: %v, want io.EOF", err)
			}
			if tr == Smux {
				f := cs.smux.conn.fl.Load()
				f.mu.Lock()
				f.err = reset
				f.mu.Unlock()
			} else {
				cs.wmu.Lock()
				cs.writeErr = reset
				cs.wmu.Unlock()
			}
			for _, partial := range []int{0, 3} {
				if err := cs.connError(io.EOF, partial); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("end of input (%d bytes into a frame) after a write failed with a reset: %v, want ECONNRESET", partial, err)
				}
			}
			cs.Kill()
		})
	}
}
