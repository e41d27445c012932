package mux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xtaci/smux"
)

// smuxFrame appends a smux frame.
func smuxFrame(b []byte, cmd byte, sid uint32, payload []byte) []byte {
	b = append(b, smuxVersion, cmd)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, sid)
	return append(b, payload...)
}

// smuxSettingsPayload is a settings stream's data, announcing limit.
func smuxSettingsPayload(limit uint64) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(nil, uint64(smuxSettingsType)), limit)
}

// smuxClientHello is what a muxrpc client over smux sends first: its
// settings stream, opened, written and closed.
func smuxClientHello(limit uint64) []byte {
	const sid = 3
	b := smuxFrame(nil, smuxSYN, sid, nil)
	b = smuxFrame(b, smuxPSH, sid, smuxSettingsPayload(limit))
	return smuxFrame(b, smuxFIN, sid, nil)
}

// rawSmuxClient connects a bare smux client, which speaks only smux, to
// addr and sends muxrpc's settings on it, so that the server takes it for
// a session; what it does then is up to the test.
func rawSmuxClient(t *testing.T, addr string) *smux.Session {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sc := smux.DefaultConfig()
	sc.Version = 2
	raw, err := smux.Client(conn, sc)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	st, err := raw.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(smuxSettingsPayload(100)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// The server's settings show that it has started the session.
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	settings, err := raw.AcceptStream()
	if err != nil {
		t.Fatalf("no settings from the server: %v", err)
	}
	if _, err := io.ReadAll(settings); err != nil {
		t.Fatalf("reading the server's settings: %v", err)
	}
	settings.Close()
	return raw
}

// TestSmuxBareStreamsCostNoGoroutines opens thousands of smux streams that
// never send their type, past a limit of 10: the server runs a goroutine
// for a few of them at most, and keeps no more open; a stream within the
// limit is admitted, and one over it refused, once its type comes; and
// other clients are served as usual.
func TestSmuxBareStreamsCostNoGoroutines(t *testing.T) {
	const limit, bare = 10, 5000
	cfg := &Config{Transport: Smux, MaxIncomingStreams: limit, HandshakeTimeout: time.Minute}
	l, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	raw := rawSmuxClient(t, l.Addr().String())
	s := acceptSession(t, l, 5*time.Second)

	// Sample the goroutines and the server's open smux streams while the
	// bare streams come in, and a while after.
	g0 := runtime.NumGoroutine()
	var peakGoroutines, peakStreams int
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for {
			peakGoroutines = max(peakGoroutines, runtime.NumGoroutine()-g0)
			peakStreams = max(peakStreams, s.smux.NumStreams())
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	streams := make([]*smux.Stream, bare)
	for i := range streams {
		if streams[i], err = raw.OpenStream(); err != nil {
			t.Fatal(err)
		}
	}
	// The server takes them in order: the first fill its slots, the next
	// few wait to be refused, and it closes the rest at once.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if s.smux.NumStreams() <= limit+smuxRefusers(s.cfg) {
			break
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	sampling.Wait()
	if peakGoroutines > limit+smuxRefusers(s.cfg)+50 {
		t.Errorf("%d bare streams cost up to %d goroutines, with MaxIncomingStreams %d", bare, peakGoroutines, limit)
	}
	// smux's own accept backlog holds up to 1024 streams.
	if peakStreams > 1024+limit+smuxRefusers(s.cfg)+50 {
		t.Errorf("%d bare streams: up to %d open on the server, with MaxIncomingStreams %d", bare, peakStreams, limit)
	}
	if n := s.smux.NumStreams(); n > limit+smuxRefusers(s.cfg) {
		t.Fatalf("the server keeps %d of %d bare streams open, with MaxIncomingStreams %d", n, bare, limit)
	}

	// Once their types come, the first stream is admitted and the first
	// over the limit refused.
	ctx := testCtx(t, 10*time.Second)
	typ := binary.AppendUvarint(nil, uint64(TypeDefault))
	for _, st := range []*smux.Stream{streams[0], streams[limit]} {
		if _, err := st.Write(typ); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Accept(ctx); err != nil {
		t.Fatalf("the first bare stream, typed at last: %v", err)
	}
	streams[limit].SetReadDeadline(time.Now().Add(10 * time.Second))
	status := make([]byte, 1)
	if _, err := io.ReadFull(streams[limit], status); err != nil || status[0] != smuxRefused {
		t.Fatalf("a bare stream over the limit, typed at last: read %v, %v, want the refusal", status, err)
	}

	c, err := Dial(ctx, "tcp", l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill() })
	serveEcho(t, acceptSession(t, l, 5*time.Second))
	if err := echo(ctx, c, []byte("still served")); err != nil {
		t.Fatal(err)
	}
}

// TestSmuxSilentConnectionsAreNoSessions connects clients that never send
// a byte to a Smux Listener: none becomes a session, each is closed after
// the handshake timeout, and they cost a goroutine each at most, while a
// real client gets its session.
func TestSmuxSilentConnectionsAreNoSessions(t *testing.T) {
	const silent = 200
	const hsTimeout = 500 * time.Millisecond
	cfg := &Config{Transport: Smux, HandshakeTimeout: hsTimeout}
	l, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan *Session, silent+1)
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- s
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for s := range accepted {
			s.Kill()
		}
	})

	g0 := runtime.NumGoroutine()
	var peak int
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for {
			peak = max(peak, runtime.NumGoroutine()-g0)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	conns := dialSilent(t, l.Addr().String(), silent)
	for i, c := range conns {
		if !isClosedByPeer(c, hsTimeout+5*time.Second) {
			t.Fatalf("silent connection %d still open %v after it was made; HandshakeTimeout is %v", i, time.Since(start), hsTimeout)
		}
	}
	close(stop)
	sampling.Wait()
	if d := time.Since(start); d < hsTimeout {
		t.Errorf("the silent connections were closed after %v, before the handshake timeout of %v", d, hsTimeout)
	}
	if peak > silent+50 {
		t.Errorf("%d silent connections cost up to %d goroutines", silent, peak)
	}

	ctx := testCtx(t, 10*time.Second)
	c, err := Dial(ctx, "tcp", l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill() })
	select {
	case s := <-accepted:
		if s.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("a silent connection became a session (%v)", s.RemoteAddr())
		}
		serveEcho(t, s)
	case <-time.After(5 * time.Second):
		t.Fatal("the real client's session was not accepted")
	}
	if err := echo(ctx, c, []byte("a real client")); err != nil {
		t.Fatal(err)
	}
}

// TestHandlerClosingItsSessionReturns has a HandleType handler close its
// own session: Close returns, after at most its CloseTimeout, rather than
// wait for the handler that calls it.
func TestHandlerClosingItsSessionReturns(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			const closeTimeout = 200 * time.Millisecond
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{CloseTimeout: closeTimeout}, tr))
			closed := make(chan error, 1)
			s.HandleType(TypeDefault, func(st *Stream) {
				io.ReadFull(st, make([]byte, 1))
				closed <- s.Close()
			})
			st, err := c.Open(testCtx(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-closed:
				if err != nil {
					t.Fatalf("Close: %v", err)
				}
			case <-time.After(closeTimeout + 10*time.Second):
				t.Fatal("Session.Close called by a handler did not return")
			}
			if s.Err() == nil {
				t.Fatal("the session still runs after Close")
			}
		})
	}
}

// TestWriteFailsOnceThePeerClosedTheStream closes a stream on one side
// while the other writes without a deadline: the writes fail soon, instead
// of waiting for window forever, and what the closing side wrote before
// it closed is still read.
func TestWriteFailsOnceThePeerClosedTheStream(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			st, peer := openAccepted(t, testCtx(t, 10*time.Second), c, s, []byte("request"))
			if _, err := peer.Write([]byte("bye")); err != nil {
				t.Fatal(err)
			}
			peer.Close()

			failed := make(chan error, 1)
			go func() {
				chunk := make([]byte, 64<<10)
				for {
					if _, err := st.Write(chunk); err != nil {
						failed <- err
						return
					}
				}
			}()
			select {
			case err := <-failed:
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Write: %v, with no deadline set", err)
				}
				if tr == Smux && !errors.Is(err, io.EOF) {
					t.Errorf("Write: %v, want an io.EOF", err)
				}
			case <-time.After(10 * time.Second):
				c.Kill() // ends the Write
				t.Fatal("Write to a stream the peer closed still blocks")
			}
			st.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := io.ReadAll(st); err != nil || string(got) != "bye" {
				t.Fatalf("read after the peer's close: %q, %v; want what it wrote", got, err)
			}
		})
	}
}

// TestSmuxWriteOnARefusedStreamIsRetrySafe opens a stream past the peer's
// limit (the test hides the limit from the client) and writes more than a
// window on it: the Write fails at once with the refusal, which proves the
// stream was never processed.
func TestSmuxWriteOnARefusedStreamIsRetrySafe(t *testing.T) {
	c, s := pair(t, &Config{Transport: Smux}, &Config{Transport: Smux, MaxIncomingStreams: 1})
	ctx := testCtx(t, 10*time.Second)
	hold, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if _, err := hold.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to take the stream", func() bool { return s.NumStreams() == 1 })
	c.mu.Lock()
	c.peer.maxIncomingStreams = maxStreamID
	c.mu.Unlock()

	st, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	failed := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, 1<<20))
		failed <- err
	}()
	select {
	case err := <-failed:
		if !errors.Is(err, ErrRefused) || !IsRetrySafe(err) {
			t.Fatalf("Write on a refused stream: %v, want a retry-safe ErrRefused", err)
		}
	case <-time.After(10 * time.Second):
		c.Kill() // ends the Write
		t.Fatal("Write on a refused stream still blocks")
	}
}

// stallConn is a connection whose writes wait, once stalled, until it is
// released; it counts the writes waiting.
type stallConn struct {
	net.Conn
	stalled atomic.Bool
	waiting atomic.Int32
	release chan struct{}
}

func (c *stallConn) Write(p []byte) (int, error) {
	if c.stalled.Load() {
		c.waiting.Add(1)
		<-c.release
	}
	return c.Conn.Write(p)
}

// TestWriteThatTimedOutNeverSendsItsBufferLater stalls the connection
// under one stream's write, so that a second stream's write, with a
// deadline, gives up while its bytes still wait to be sent (on smux; the
// native engine queues a copy and returns at once); the writer
// then reuses its buffer, as a pooled buffer is reused. What the peer
// reads on that stream afterwards is never the reused buffer: on smux,
// which leaves a frame queued when its Write gives up and reads it later,
// the buffer used to go out as it was by then, and the race detector
// flagged the write against smux's copy.
func TestWriteThatTimedOutNeverSendsItsBufferLater(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan *Session, 1)
			go func() {
				defer close(accepted)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if s, err := Server(c, withTransport(nil, tr)); err == nil {
					accepted <- s
				} else {
					c.Close()
				}
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			conn := &stallConn{Conn: raw, release: make(chan struct{})}
			c, err := Client(conn, withTransport(nil, tr))
			if err != nil {
				raw.Close()
				t.Fatal(err)
			}
			released := false
			unstall := func() {
				if !released {
					released = true
					close(conn.release)
				}
			}
			defer c.Kill()
			defer unstall()
			s := <-accepted
			if s == nil {
				t.Fatal("the server's session did not start")
			}
			defer s.Kill()
			ctx := testCtx(t, 10*time.Second)
			a, _ := openAccepted(t, ctx, c, s, []byte("a"))
			b, peerB := openAccepted(t, ctx, c, s, []byte("b"))

			conn.stalled.Store(true)
			// Stalls the connection, and on Smux fills what the session
			// buffers of smux's writes too (see smuxWriteBacklog).
			go a.Write(make([]byte, 2*smuxWriteBacklog))
			waitFor(t, "a write to stall", func() bool { return conn.waiting.Load() > 0 })
			if tr == Smux {
				// Not only stalled: full, or b's bytes would still fit.
				waitFor(t, "smux's backlog to fill", func() bool {
					f := c.smux.conn.fl.Load()
					f.mu.Lock()
					defer f.mu.Unlock()
					return len(f.buf) >= smuxWriteBacklog
				})
			}
			buf := bytes.Repeat([]byte("good"), 256)
			b.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := b.Write(buf); err == nil && tr == Smux {
				t.Fatal("a write on a stalled connection met its deadline")
			} // the native engine copies what it queues, and returns
			for i := range buf {
				buf[i] = 'X' // the buffer's next use
			}
			conn.stalled.Store(false)
			unstall()
			peerB.SetReadDeadline(time.Now().Add(time.Second))
			got, _ := io.ReadAll(peerB) // until the deadline: what arrives, if anything
			if bytes.Contains(got, []byte("X")) {
				t.Fatalf("the peer read the buffer as it was after the failed write: %.40q", got)
			}
		})
	}
}
