package mux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// pattern returns n bytes that depend on seed, so that a byte delivered to
// the wrong stream or at the wrong offset is noticed.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// serveEcho accepts the peer's streams of type TypeDefault on s and echoes
// every byte back, closing each stream at the end of its input. It stops,
// and waits for its goroutines, when the test ends.
func serveEcho(t testing.TB, s *Session) {
	t.Helper()
	serve(t, s, TypeDefault, func(st *Stream) {
		io.Copy(st, st)
	})
}

// serve accepts the peer's streams of type typ and runs handle on each in
// its own goroutine, closing the stream afterwards. At the end of the test
// the session is killed and every goroutine waited for.
func serve(t testing.TB, s *Session, typ StreamType, handle func(*Stream)) {
	t.Helper()
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := s.AcceptType(ctx, typ)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				handle(st)
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		s.Kill()
		wg.Wait()
	})
}

// echo sends msg on a new stream of sess and checks that the peer's echo
// server returns every byte. On the native transport the request ends with
// CloseWrite and the answer is read to io.EOF; smux has no reliable
// half-close, so there exactly len(msg) bytes are read.
func echo(ctx context.Context, sess *Session, msg []byte) error {
	st, err := sess.Open(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer st.Close()
	return echoOn(ctx, st, msg, false)
}

// echoOn runs echo on st; written says msg has been written already.
func echoOn(ctx context.Context, st *Stream, msg []byte, written bool) error {
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	native := st.Session().smux == nil
	werr := make(chan error, 1)
	go func() {
		if written {
		} else if _, err := st.Write(msg); err != nil {
			werr <- fmt.Errorf("write: %w", err)
			return
		}
		if native {
			if err := st.CloseWrite(); err != nil {
				werr <- fmt.Errorf("close write: %w", err)
				return
			}
		}
		werr <- nil
	}()
	var got []byte
	var err error
	if native {
		got, err = io.ReadAll(st)
	} else {
		got = make([]byte, len(msg))
		_, err = io.ReadFull(st, got)
	}
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", len(got), err)
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo differs: got %d bytes, want %d", len(got), len(msg))
	}
	return nil
}

// TestStreamsSequential opens 10,000 streams one after another from each
// side of one session at the same time, and checks every echoed byte.
func TestStreamsSequential(t *testing.T) {
	const n = 10000
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			serveEcho(t, c)
			serveEcho(t, s)
			ctx := testCtx(t, 40*time.Second)
			errs := make(chan error, 2)
			for side, sess := range []*Session{c, s} {
				go func() {
					for i := 0; i < n; i++ {
						if err := echo(ctx, sess, pattern(side*n+i, 1+i%1500)); err != nil {
							errs <- fmt.Errorf("side %d stream %d: %w", side, i, err)
							return
						}
					}
					errs <- nil
				}()
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestStreamsConcurrent has 1,000 streams open at once from each side of
// one session, 2,000 in all, and checks every echoed byte.
func TestStreamsConcurrent(t *testing.T) {
	const n = 1000
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			cfg := withTransport(&Config{MaxIncomingStreams: 2 * n}, tr)
			c, s := pair(t, cfg, cfg)
			serveEcho(t, c)
			serveEcho(t, s)
			ctx := testCtx(t, 30*time.Second)
			var opened, wg sync.WaitGroup
			opened.Add(2 * n)
			allOpen := make(chan struct{})
			errs := make(chan error, 2*n)
			for side, sess := range []*Session{c, s} {
				for i := 0; i < n; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						msg := pattern(side*n+i, 100+i)
						st, err := sess.Open(ctx)
						if err == nil {
							_, err = st.Write(msg) // the peer learns of the stream
						}
						opened.Done()
						if err != nil {
							errs <- fmt.Errorf("side %d stream %d: open: %w", side, i, err)
							return
						}
						defer st.Close()
						select {
						case <-allOpen:
						case <-ctx.Done():
							errs <- ctx.Err()
							return
						}
						if err := echoOn(ctx, st, msg, true); err != nil {
							errs <- fmt.Errorf("side %d stream %d: %w", side, i, err)
						}
					}()
				}
			}
			opened.Wait()
			// Every stream has been opened and written to, and none has
			// ended: once the opening frames have arrived, each side has
			// its n streams and the peer's n open at once.
			for c.NumStreams() < 2*n || s.NumStreams() < 2*n {
				if ctx.Err() != nil || len(errs) > 0 {
					t.Errorf("streams open at once: client %d, server %d, want %d each", c.NumStreams(), s.NumStreams(), 2*n)
					break
				}
				time.Sleep(time.Millisecond)
			}
			close(allOpen)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}

// requestResponse runs one call: the client writes req, ends its direction
// (natively with CloseWrite; on smux the server reads len(req) bytes), and
// reads the whole response up to io.EOF.
func requestResponse(ctx context.Context, c *Session, req, want []byte) error {
	st, err := c.Open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if _, err := st.Write(req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if c.smux == nil {
		if err := st.CloseWrite(); err != nil {
			return fmt.Errorf("close write: %w", err)
		}
	}
	got, err := io.ReadAll(st)
	if err != nil {
		return fmt.Errorf("read after %d of %d bytes: %w", len(got), len(want), err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("response: got %d bytes, want %d", len(got), len(want))
	}
	return nil
}

// TestRequestCloseWriteResponse proves that "write request, end it, read
// the whole response" loses nothing: 1,000 of 1,000 runs with a response
// larger than the request, and once with a response beyond StreamWindow.
// On smux, CloseWrite is refused (ErrUnsupported) and the request ends
// in-band; the server's Close after the response must still deliver all.
func TestRequestCloseWriteResponse(t *testing.T) {
	const runs = 1000
	const reqLen = 100
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			serve(t, s, TypeDefault, func(st *Stream) {
				var req []byte
				var err error
				if tr == Native {
					req, err = io.ReadAll(st)
				} else {
					req = make([]byte, reqLen)
					_, err = io.ReadFull(st, req)
				}
				if err != nil || len(req) != reqLen {
					st.Reset(ResetInternal)
					return
				}
				size := 1000 + int(req[0])*4
				if req[1] == 0xff {
					size = 4 * defaultStreamWindow
				}
				st.Write(pattern(int(req[0])<<8|int(req[2]), size))
			})
			ctx := testCtx(t, 30*time.Second)
			for i := 0; i < runs; i++ {
				req := pattern(i, reqLen)
				req[1] = 0
				want := pattern(int(req[0])<<8|int(req[2]), 1000+int(req[0])*4)
				if err := requestResponse(ctx, c, req, want); err != nil {
					t.Fatalf("run %d of %d: %v", i, runs, err)
				}
			}
			req := pattern(-1, reqLen)
			req[1] = 0xff
			want := pattern(int(req[0])<<8|int(req[2]), 4*defaultStreamWindow)
			if err := requestResponse(ctx, c, req, want); err != nil {
				t.Fatalf("response of 4 x StreamWindow: %v", err)
			}
			if tr == Smux {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				if err := st.CloseWrite(); !errors.Is(err, ErrUnsupported) {
					t.Fatalf("smux CloseWrite: got %v, want ErrUnsupported", err)
				}
			}
		})
	}
}

// TestStreamDeadlines checks read and write deadlines: they fail with
// os.ErrDeadlineExceeded, a net.Error whose Timeout is true, and clearing
// them makes the stream usable again.
func TestStreamDeadlines(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			// A small window on the server, so a write blocks soon.
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{StreamWindow: 4 << 10}, tr))
			ctx := testCtx(t, 10*time.Second)
			st, peer := openAccepted(t, ctx, c, s, []byte("hello"))

			checkTimeout := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("%s: got %v, want os.ErrDeadlineExceeded", what, err)
				}
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("%s: %v is not a net.Error with Timeout() true", what, err)
				}
			}

			// Read deadline in the future: the read waits, then times out.
			st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			start := time.Now()
			_, err := st.Read(make([]byte, 10))
			checkTimeout("read", err)
			if d := time.Since(start); d < 40*time.Millisecond || d > 3*time.Second {
				t.Fatalf("read deadline of 50ms fired after %v", d)
			}
			// A deadline in the past fails at once.
			st.SetReadDeadline(time.Now().Add(-time.Second))
			_, err = st.Read(make([]byte, 10))
			checkTimeout("read, past deadline", err)
			// Cleared, a read waits for data again.
			st.SetReadDeadline(time.Time{})
			go peer.Write([]byte("world"))
			buf := make([]byte, 5)
			if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "world" {
				t.Fatalf("read after clearing the deadline: %q, %v", buf, err)
			}

			// Write deadline: the server never reads, so the window fills.
			st.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := st.Write(make([]byte, 1<<20))
			checkTimeout("write", err)
			if n >= 1<<20 {
				t.Fatalf("write of 1 MiB into a blocked stream wrote %d bytes", n)
			}
			// Cleared, and the peer reads: writing goes on.
			st.SetWriteDeadline(time.Time{})
			drained := make(chan error, 1)
			go func() {
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err := io.ReadFull(peer, make([]byte, 5+n+1000))
				drained <- err
			}()
			if _, err := st.Write(make([]byte, 1000)); err != nil {
				t.Fatalf("write after clearing the deadline: %v", err)
			}
			if err := <-drained; err != nil {
				t.Fatalf("peer reading: %v", err)
			}

			// SetDeadline covers both directions.
			st.SetDeadline(time.Now().Add(20 * time.Millisecond))
			_, err = st.Read(buf)
			checkTimeout("read after SetDeadline", err)
		})
	}
}

// TestStreamReset checks that Reset(code) fails the peer's Read and Write
// with *ResetError{Code: code, Remote: true}, and this side's with the
// same code, Remote false. On smux Reset closes the stream and reports
// ErrUnsupported; the peer reads io.EOF.
func TestStreamReset(t *testing.T) {
	const code = 0x4242
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ctx := testCtx(t, 10*time.Second)
			st, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			st.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := st.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			peer, err := s.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			readErr := make(chan error, 1)
			go func() { // blocked in Read when the reset arrives
				_, err := st.Read(make([]byte, 1))
				readErr <- err
			}()
			if tr == Smux {
				if err := peer.Reset(code); !errors.Is(err, ErrUnsupported) {
					t.Fatalf("smux Reset: got %v, want ErrUnsupported", err)
				}
				if err := <-readErr; err != io.EOF {
					t.Fatalf("smux read after the peer's Reset: got %v, want io.EOF", err)
				}
				return
			}
			if err := peer.Reset(code); err != nil {
				t.Fatal(err)
			}
			want := &ResetError{Code: code, Remote: true}
			check := func(what string, err error, want *ResetError) {
				t.Helper()
				var re *ResetError
				if !errors.As(err, &re) || *re != *want {
					t.Fatalf("%s: got %v, want %+v", what, err, want)
				}
				if IsRetrySafe(err) {
					t.Fatalf("%s: a stream reset after processing must not be retry-safe", what)
				}
			}
			check("peer's blocked read", <-readErr, want)
			_, err = st.Write([]byte("more"))
			check("peer's write", err, want)
			_, err = st.Read(make([]byte, 1))
			check("peer's second read", err, want)
			_, err = peer.Read(make([]byte, 1))
			check("resetter's read", err, &ResetError{Code: code})
			_, err = peer.Write([]byte("x"))
			check("resetter's write", err, &ResetError{Code: code})

			// The session is fine.
			serveEcho(t, s)
			if err := echo(ctx, c, []byte("after reset")); err != nil {
				t.Fatal(err)
			}
			// A reset with ResetRefused is retry-safe.
			st2, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer st2.Close()
			st2.Reset(ResetRefused)
			if _, err := st2.Write([]byte("x")); !IsRetrySafe(err) {
				t.Fatalf("write on a stream reset with ResetRefused: %v is not retry-safe", err)
			}
		})
	}
}

// TestStreamClose checks the net.Conn behaviour of Close: the peer reads
// everything written, then io.EOF, and this side's calls fail with
// ErrStreamClosed.
func TestStreamClose(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ctx := testCtx(t, 10*time.Second)
			st, err := c.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			msg := pattern(7, 100000)
			if _, err := st.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, err := st.Write([]byte("x")); !errors.Is(err, ErrStreamClosed) || !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write after Close: got %v, want ErrStreamClosed", err)
			}
			if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrStreamClosed) {
				t.Fatalf("read after Close: got %v, want ErrStreamClosed", err)
			}
			peer, err := s.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peer.SetDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(peer)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("peer read %d of %d bytes, err %v", len(got), len(msg), err)
			}
		})
	}
}

// TestConfigValidation checks that invalid values are refused with an
// error naming the field, by Client, Server and NewListener alike.
func TestConfigValidation(t *testing.T) {
	bad := []struct {
		cfg   Config
		field string
	}{
		{Config{Transport: 7}, "Transport"},
		{Config{MaxIncomingStreams: -1}, "MaxIncomingStreams"},
		{Config{StreamWindow: 100}, "StreamWindow"},
		{Config{StreamWindow: -5}, "StreamWindow"},
		{Config{StreamWindow: 1 << 31}, "StreamWindow"},
		{Config{MaxFrameSize: 512}, "MaxFrameSize"},
		{Config{MaxFrameSize: 1 << 24}, "MaxFrameSize"},
		{Config{KeepAliveInterval: time.Second, KeepAliveTimeout: time.Second}, "KeepAliveTimeout"},
		{Config{KeepAliveInterval: 50 * time.Second}, "KeepAliveTimeout"}, // beyond the default timeout
		{Config{HandshakeTimeout: -time.Second}, "HandshakeTimeout"},
		{Config{CloseTimeout: -time.Second}, "CloseTimeout"},
		{Config{IdleTimeout: -time.Second}, "IdleTimeout"},
		{Config{MaxPendingHandshakes: -1}, "MaxPendingHandshakes"},
	}
	for _, b := range bad {
		cfg := b.cfg
		if _, err := cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), b.field) {
			t.Errorf("%+v: got %v, want an error naming %s", b.cfg, err, b.field)
		}
		for _, start := range []func(net.Conn, *Config) (*Session, error){Client, Server} {
			c1, c2 := net.Pipe()
			res := make(chan error, 1)
			go func() {
				s, err := start(c1, &cfg)
				if err == nil {
					s.Kill()
				}
				res <- err
			}()
			// The session owns the connection, even when refusing the
			// config: it must close it without sending anything.
			c2.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c2.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("%+v: the peer read %d bytes, %v; want io.EOF", b.cfg, n, err)
			}
			c2.Close()
			if err := <-res; err == nil {
				t.Errorf("%+v accepted", b.cfg)
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if l, err := NewListener(ln, &cfg); err == nil {
			l.Close()
			t.Errorf("NewListener accepted %+v", b.cfg)
		}
		ln.Close()
	}
	// Valid edge values and nil are accepted.
	good := []*Config{
		nil,
		{},
		{MaxIncomingStreams: 1, StreamWindow: 1 << 10, MaxFrameSize: 1 << 10},
		{StreamWindow: 1<<31 - 1, MaxFrameSize: 1<<24 - 1},
		{KeepAliveInterval: -1},
		{KeepAliveInterval: time.Second, KeepAliveTimeout: 2 * time.Second},
		{Transport: Smux},
		{IdleTimeout: time.Millisecond, MaxPendingHandshakes: 1},
	}
	for _, cfg := range good {
		if _, err := cfg.withDefaults(); err != nil {
			t.Errorf("%+v refused: %v", cfg, err)
		}
	}
}
