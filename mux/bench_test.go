package mux

// Benchmarks comparing, in one run, raw TCP, the Native transport, the
// Smux transport and, as an outside reference, github.com/hashicorp/yamux
// with its default config (the mux many of our users come from, via
// net/rpc or hashicorp/go-plugin), all over loopback TCP:
//
//	BenchmarkPingPong  64-byte ping-pong on one long-lived connection or
//	                   stream; one op = one round trip.
//	BenchmarkCall      one RPC per stream: open, 64-byte request, 64-byte
//	                   response, close; with 1 caller and with 64 callers
//	                   sharing one session. Raw TCP references: ping-pong
//	                   on one connection (the latency floor) and a new TCP
//	                   connection per call.
//	BenchmarkBulk      1 MiB writes on one stream, drained on the other side.
//
// The yamux cases use yamux's own API directly (no Session or Stream of
// this package is involved), the way a yamux user would write them; a
// yamux stream's Close half-closes it, so there a call ends its request
// with Close and both sides read to EOF, as callNative does.
//
// Both ends run in this process, so allocs/op counts the client and the
// server. Servers start before b.ResetTimer: their setup is not counted,
// their steady-state work is. On Linux, rsys/op and wsys/op count the
// read- and write-family syscalls per op of both ends (from /proc/self/io;
// wsys includes the runtime's netpoll wake-ups), which shows how well
// frames are batched. Every benchmark is bounded by a watchdog that
// kills the sessions (or closes the connections) after benchLimit, which
// fails whatever is blocked, and cleans up its goroutines for goleak.
//
// Typical run (2 cores):
//
//	go test -run '^$' -bench 'PingPong|Call' -benchtime 20000x -count 3 ./mux/
//	go test -run '^$' -bench Bulk -benchtime 200x -count 3 ./mux/

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	msgSize       = 64
	bulkChunk     = 1 << 20
	bulkReadSize  = 256 << 10
	benchLimit    = 2 * time.Minute // per benchmark invocation
	manyCallers   = 64
	benchAcceptTO = 10 * time.Second
)

// Shared, read-only payloads: writing them allocates nothing per op.
var (
	benchReq   = bytesOf('q', msgSize)
	benchResp  = bytesOf('r', msgSize)
	benchChunk = bytesOf('b', bulkChunk)
)

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

// benchEnv tracks one benchmark invocation's goroutines, its first error,
// and the kill switch the watchdog and failures pull.
type benchEnv struct {
	b        *testing.B
	kill     func() // ends the sessions or connections; idempotent
	wg       sync.WaitGroup
	stopping atomic.Bool // cleanup has begun: errors from now on are expected
	dead     chan struct{}
	deadOnce sync.Once
	mu       sync.Mutex
	err      error
	fired    atomic.Bool // the watchdog fired
}

// newBenchEnv arms a watchdog that calls kill after benchLimit and
// registers cleanup: kill, then wait for the benchmark's goroutines. It
// must be called after pair (or tcpPair), so its cleanup runs first.
func newBenchEnv(b *testing.B, kill func()) *benchEnv {
	e := &benchEnv{b: b, dead: make(chan struct{})}
	e.kill = func() {
		e.deadOnce.Do(func() { close(e.dead) })
		kill()
	}
	wd := time.AfterFunc(benchLimit, func() {
		e.fired.Store(true)
		e.fail(fmt.Errorf("watchdog: benchmark did not finish within %v", benchLimit))
	})
	b.Cleanup(func() {
		wd.Stop()
		e.stopping.Store(true)
		e.kill()
		e.wg.Wait()
	})
	return e
}

// fail records err (the first one wins) and kills everything, which makes
// every blocked operation of the benchmark return.
func (e *benchEnv) fail(err error) {
	if e.stopping.Load() {
		return
	}
	e.mu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.mu.Unlock()
	e.kill()
}

func (e *benchEnv) firstErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// check fails the benchmark with the first recorded error, if any, or with
// err.
func (e *benchEnv) check(err error) {
	e.b.Helper()
	if first := e.firstErr(); first != nil {
		e.b.Fatal(first)
	}
	if err != nil {
		e.b.Fatal(err)
	}
}

// goFn runs f in a goroutine that cleanup waits for.
func (e *benchEnv) goFn(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

// benchSessions returns a client and server session of transport tr and
// their benchEnv.
func benchSessions(b *testing.B, tr Transport) (*Session, *Session, *benchEnv) {
	cs, ss := pair(b, withTransport(nil, tr), withTransport(nil, tr))
	e := newBenchEnv(b, func() {
		cs.Kill()
		ss.Kill()
	})
	return cs, ss, e
}

// tcpPair returns both ends of a loopback TCP connection and a benchEnv
// whose kill closes them.
func tcpPair(b *testing.B) (net.Conn, net.Conn, *benchEnv) {
	c, s := loopbackConns(b)
	e := newBenchEnv(b, func() {
		c.Close()
		s.Close()
	})
	return c, s, e
}

// loopbackConns returns the dialing and the accepting end of a loopback
// TCP connection, closed when the benchmark ends.
func loopbackConns(b *testing.B) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(benchAcceptTO))
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d := net.Dialer{Timeout: benchAcceptTO}
	c, err := d.Dial("tcp", ln.Addr().String())
	s := <-accepted
	if err != nil || s == nil {
		if c != nil {
			c.Close()
		}
		if s != nil {
			s.Close()
		}
		b.Fatalf("loopback TCP pair: dial %v, accept %v", err, s)
	}
	b.Cleanup(func() {
		c.Close()
		s.Close()
	})
	return c, s
}

// yamuxSessions returns a yamux client and server session, with yamux's
// default config, on a loopback TCP connection, and their benchEnv, whose
// kill closes both. yamux's Close waits for the session's receive and send
// goroutines; its keepalive goroutine ends on the same signal.
func yamuxSessions(b *testing.B) (*yamux.Session, *yamux.Session, *benchEnv) {
	c, s := loopbackConns(b)
	cs, err := yamux.Client(c, nil)
	if err != nil {
		b.Fatal(err)
	}
	ss, err := yamux.Server(s, nil)
	if err != nil {
		cs.Close()
		b.Fatal(err)
	}
	e := newBenchEnv(b, func() {
		cs.Close()
		ss.Close()
	})
	return cs, ss, e
}

// readFullStream is io.ReadFull for a *Stream, called directly so that a
// buffer on the caller's stack does not escape (and allocate) per call.
func readFullStream(st *Stream, p []byte) error {
	for n := 0; n < len(p); {
		k, err := st.Read(p[n:])
		n += k
		if err != nil {
			if err == io.EOF && n < len(p) {
				return io.ErrUnexpectedEOF
			}
			if n < len(p) {
				return err
			}
		}
	}
	return nil
}

// expectEOFStream reads once more and requires io.EOF.
func expectEOFStream(st *Stream, p []byte) error {
	n, err := st.Read(p)
	if n != 0 || err != io.EOF {
		return fmt.Errorf("after the %d-byte message: read %d bytes, %v; want EOF", msgSize, n, err)
	}
	return nil
}

// sysCount samples the process's read- and write-family syscall counts
// (syscr, syscw in /proc/self/io; Linux only) so a benchmark can report
// syscalls per op for both ends together. Sampling allocates, so take the
// samples outside the timed region.
type sysCount struct {
	r, w int64
	ok   bool
}

func sampleSyscalls() sysCount {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return sysCount{}
	}
	var c sysCount
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch {
		case err != nil:
		case k == "syscr":
			c.r, c.ok = n, true
		case k == "syscw":
			c.w = n
		}
	}
	return c
}

// report adds read and write syscalls per op since c, as "rsys/op" and
// "wsys/op", when the counts are available.
func (c sysCount) report(b *testing.B) {
	now := sampleSyscalls()
	if !c.ok || !now.ok || b.N == 0 {
		return
	}
	b.ReportMetric(float64(now.r-c.r)/float64(b.N), "rsys/op")
	b.ReportMetric(float64(now.w-c.w)/float64(b.N), "wsys/op")
}

// ---------------------------------------------------------------------------
// Ping-pong: one round trip of 64 bytes each way on one long-lived channel.

func BenchmarkPingPong(b *testing.B) {
	b.Run("tcp", benchPingPongTCP)
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) { benchPingPongMux(b, tr) })
	}
	b.Run("yamux", benchPingPongYamux)
}

func benchPingPongTCP(b *testing.B) {
	b.ReportAllocs()
	c, s, e := tcpPair(b)
	e.goFn(func() {
		buf := make([]byte, msgSize)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				e.fail(fmt.Errorf("server read: %w", err))
				return
			}
			if _, err := s.Write(buf); err != nil {
				e.fail(fmt.Errorf("server write: %w", err))
				return
			}
		}
	})
	buf := make([]byte, msgSize)
	round := func() error {
		if _, err := c.Write(benchReq); err != nil {
			return err
		}
		_, err := io.ReadFull(c, buf)
		return err
	}
	e.check(round()) // warm up
	sys := sampleSyscalls()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := round(); err != nil {
			e.check(err)
		}
	}
	b.StopTimer()
	sys.report(b)
	e.check(nil)
}

func benchPingPongMux(b *testing.B, tr Transport) {
	b.ReportAllocs()
	cs, ss, e := benchSessions(b, tr)
	ctx := context.Background()
	e.goFn(func() {
		st, err := ss.Accept(ctx)
		if err != nil {
			e.fail(fmt.Errorf("accept: %w", err))
			return
		}
		defer st.Close()
		buf := make([]byte, msgSize)
		for {
			if err := readFullStream(st, buf); err != nil {
				e.fail(fmt.Errorf("server read: %w", err))
				return
			}
			if _, err := st.Write(buf); err != nil {
				e.fail(fmt.Errorf("server write: %w", err))
				return
			}
		}
	})
	st, err := cs.Open(ctx) // ended by the cleanup's Kill, after which server errors are expected
	e.check(err)
	buf := make([]byte, msgSize)
	round := func() error {
		if _, err := st.Write(benchReq); err != nil {
			return err
		}
		return readFullStream(st, buf)
	}
	e.check(round()) // warm up: the stream is open and accepted
	sys := sampleSyscalls()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := round(); err != nil {
			e.check(err)
		}
	}
	b.StopTimer()
	sys.report(b)
	e.check(nil)
}

func benchPingPongYamux(b *testing.B) {
	b.ReportAllocs()
	cs, ss, e := yamuxSessions(b)
	e.goFn(func() {
		st, err := ss.AcceptStream()
		if err != nil {
			e.fail(fmt.Errorf("accept: %w", err))
			return
		}
		defer st.Close()
		buf := make([]byte, msgSize)
		for {
			if _, err := io.ReadFull(st, buf); err != nil {
				e.fail(fmt.Errorf("server read: %w", err))
				return
			}
			if _, err := st.Write(buf); err != nil {
				e.fail(fmt.Errorf("server write: %w", err))
				return
			}
		}
	})
	st, err := cs.OpenStream() // ended by the cleanup's Close
	e.check(err)
	buf := make([]byte, msgSize)
	round := func() error {
		if _, err := st.Write(benchReq); err != nil {
			return err
		}
		_, err := io.ReadFull(st, buf)
		return err
	}
	e.check(round()) // warm up: the stream is open and accepted
	sys := sampleSyscalls()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := round(); err != nil {
			e.check(err)
		}
	}
	b.StopTimer()
	sys.report(b)
	e.check(nil)
}

// ---------------------------------------------------------------------------
// Call: open + 64-byte request + 64-byte response + close, one stream per
// call. On Native the request ends with CloseWrite and both sides read to
// EOF; Smux has no working CloseWrite, so there the request is framed by
// its size (the server reads exactly 64 bytes).

func BenchmarkCall(b *testing.B) {
	b.Run("tcp-pingpong/callers=1", benchPingPongTCP)
	b.Run("tcp-dial/callers=1", func(b *testing.B) { benchCallTCPDial(b, 1) })
	for _, m := range []callMode{callNative, callNativeWriteLast, callSmux} {
		for _, callers := range []int{1, manyCallers} {
			b.Run(m.String()+"/callers="+strconv.Itoa(callers), func(b *testing.B) {
				benchCallMux(b, m, callers)
			})
		}
	}
	for _, callers := range []int{1, manyCallers} {
		b.Run("yamux/callers="+strconv.Itoa(callers), func(b *testing.B) {
			benchCallYamux(b, callers)
		})
	}
}

// callMode is how a call is written.
type callMode int

const (
	// callNative: Write, then CloseWrite; the server reads to EOF, Writes
	// and Closes; the client reads to EOF.
	callNative callMode = iota
	// callNativeWriteLast: the same with Stream.WriteLast on both sides,
	// so request and response each travel in one frame with the end flag.
	callNativeWriteLast
	// callSmux: Smux transport, the request framed by its size.
	callSmux
)

func (m callMode) String() string {
	return [...]string{"native", "native-writelast", "smux"}[m]
}

func (m callMode) transport() Transport {
	if m == callSmux {
		return Smux
	}
	return Native
}

// serveCalls runs one accept loop on ss and a goroutine per stream.
func serveCalls(e *benchEnv, ss *Session, m callMode) {
	if m.transport() == Native {
		// Handlers start from the session's reader, as rpc serves calls;
		// they end with the session, when their reads fail.
		ss.HandleType(TypeDefault, func(st *Stream) {
			e.wg.Add(1)
			handleCall(e, st, m)
		})
		return
	}
	e.goFn(func() {
		for {
			st, err := ss.Accept(context.Background())
			if err != nil {
				e.fail(fmt.Errorf("accept: %w", err))
				return
			}
			e.wg.Add(1)
			go handleCall(e, st, m)
		}
	})
}

func handleCall(e *benchEnv, st *Stream, m callMode) {
	defer e.wg.Done()
	var buf [msgSize]byte
	err := readFullStream(st, buf[:])
	if err == nil && m != callSmux {
		err = expectEOFStream(st, buf[:])
	}
	if err == nil {
		if m == callNativeWriteLast {
			_, err = st.WriteLast(benchResp)
		} else {
			_, err = st.Write(benchResp)
		}
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		e.fail(fmt.Errorf("server: %w", err))
	}
}

// doCall is one call from the client.
func doCall(ctx context.Context, cs *Session, m callMode, buf []byte) error {
	st, err := cs.Open(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	switch m {
	case callNative:
		if _, err = st.Write(benchReq); err != nil {
			err = fmt.Errorf("write: %w", err)
		} else if err = st.CloseWrite(); err != nil {
			err = fmt.Errorf("close write: %w", err)
		}
	case callNativeWriteLast:
		if _, err = st.WriteLast(benchReq); err != nil {
			err = fmt.Errorf("write last: %w", err)
		}
	case callSmux:
		if _, err = st.Write(benchReq); err != nil {
			err = fmt.Errorf("write: %w", err)
		}
	}
	if err == nil {
		if err = readFullStream(st, buf); err != nil {
			err = fmt.Errorf("read: %w", err)
		} else if m != callSmux {
			err = expectEOFStream(st, buf)
		}
	}
	if cerr := st.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

func benchCallMux(b *testing.B, m callMode, callers int) {
	b.ReportAllocs()
	cs, ss, e := benchSessions(b, m.transport())
	serveCalls(e, ss, m)
	ctx := context.Background()
	e.check(doCall(ctx, cs, m, make([]byte, msgSize))) // warm up
	runCallers(b, e, callers, func(buf []byte) error { return doCall(ctx, cs, m, buf) })
}

// benchCallYamux is the same call on a yamux stream: Close half-closes
// it, so the request ends with Close and both sides read to EOF.
func benchCallYamux(b *testing.B, callers int) {
	b.ReportAllocs()
	cs, ss, e := yamuxSessions(b)
	e.goFn(func() {
		for {
			st, err := ss.AcceptStream()
			if err != nil {
				e.fail(fmt.Errorf("accept: %w", err))
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer st.Close()
				var buf [msgSize + 1]byte
				if _, err := io.ReadFull(st, buf[:msgSize]); err != nil {
					e.fail(fmt.Errorf("server read: %w", err))
					return
				}
				if n, err := st.Read(buf[:]); n != 0 || err != io.EOF {
					e.fail(fmt.Errorf("server: read %d, %v after request; want EOF", n, err))
					return
				}
				if _, err := st.Write(benchResp); err != nil {
					e.fail(fmt.Errorf("server write: %w", err))
				}
			}()
		}
	})
	call := func(buf []byte) error {
		st, err := cs.OpenStream()
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		defer st.Close()
		if _, err := st.Write(benchReq); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if err := st.Close(); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		if _, err := io.ReadFull(st, buf[:msgSize]); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n, err := st.Read(buf[:msgSize+1]); n != 0 || err != io.EOF {
			return fmt.Errorf("read %d, %v after response; want EOF", n, err)
		}
		return nil
	}
	e.check(call(make([]byte, msgSize+1))) // warm up
	runCallers(b, e, callers, call)
}

// benchCallTCPDial is the same call on a new TCP connection each time.
func benchCallTCPDial(b *testing.B, callers int) {
	b.ReportAllocs()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var (
		connMu sync.Mutex
		conns  = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn, add bool) bool {
		connMu.Lock()
		defer connMu.Unlock()
		if conns == nil {
			return false
		}
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
		return true
	}
	e := newBenchEnv(b, func() {
		ln.Close()
		connMu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		connMu.Unlock()
	})
	e.goFn(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				e.fail(fmt.Errorf("accept: %w", err))
				return
			}
			if !track(c, true) {
				c.Close()
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer track(c, false)
				defer c.Close()
				var buf [msgSize + 1]byte
				if _, err := io.ReadFull(c, buf[:msgSize]); err != nil {
					e.fail(fmt.Errorf("server read: %w", err))
					return
				}
				if n, err := c.Read(buf[:]); n != 0 || err != io.EOF {
					e.fail(fmt.Errorf("server: read %d, %v after request; want EOF", n, err))
					return
				}
				if _, err := c.Write(benchResp); err != nil {
					e.fail(fmt.Errorf("server write: %w", err))
				}
			}()
		}
	})
	addr := ln.Addr().String()
	d := net.Dialer{Timeout: benchAcceptTO}
	call := func(buf []byte) error {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		if !track(c, true) {
			c.Close()
			return errors.New("stopped")
		}
		defer track(c, false)
		defer c.Close()
		if _, err := c.Write(benchReq); err != nil {
			return err
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf[:msgSize]); err != nil {
			return err
		}
		if n, err := c.Read(buf); n != 0 || err != io.EOF {
			return fmt.Errorf("read %d, %v after response; want EOF", n, err)
		}
		return nil
	}
	e.check(call(make([]byte, msgSize+1))) // warm up
	runCallers(b, e, callers, call)
}

// runCallers runs b.N calls from callers goroutines (inline for one),
// times them and reports calls/s. Each caller has its own buffer.
func runCallers(b *testing.B, e *benchEnv, callers int, call func(buf []byte) error) {
	bufs := make([][]byte, callers)
	for i := range bufs {
		bufs[i] = make([]byte, msgSize+1)[:msgSize]
	}
	var next atomic.Int64
	var workers sync.WaitGroup
	sys := sampleSyscalls()
	b.ResetTimer()
	start := time.Now()
	if callers == 1 {
		for i := 0; i < b.N; i++ {
			if err := call(bufs[0]); err != nil {
				e.check(err)
			}
		}
	} else {
		for w := 0; w < callers; w++ {
			workers.Add(1)
			go func(buf []byte) {
				defer workers.Done()
				for next.Add(1) <= int64(b.N) {
					if err := call(buf); err != nil {
						e.fail(err)
						return
					}
				}
			}(bufs[w])
		}
		workers.Wait()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	sys.report(b)
	e.check(nil)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}

// ---------------------------------------------------------------------------
// Bulk: 1 MiB writes on one stream; the other side drains. The timer stops
// when the reader has received everything.

func BenchmarkBulk(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		c, s, e := tcpPair(b)
		benchBulk(b, e, c, func() (io.Reader, error) { return s, nil })
	})
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			cs, ss, e := benchSessions(b, tr)
			st, err := cs.Open(context.Background())
			e.check(err)
			defer st.Close()
			benchBulk(b, e, st, func() (io.Reader, error) {
				return ss.Accept(context.Background())
			})
		})
	}
	b.Run("yamux", func(b *testing.B) {
		cs, ss, e := yamuxSessions(b)
		st, err := cs.OpenStream()
		e.check(err)
		defer st.Close()
		benchBulk(b, e, st, func() (io.Reader, error) { return ss.AcceptStream() })
	})
}

func benchBulk(b *testing.B, e *benchEnv, w io.Writer, accept func() (io.Reader, error)) {
	b.ReportAllocs()
	b.SetBytes(bulkChunk)
	target := int64(b.N+1) * bulkChunk // one warm-up chunk, then b.N
	var got atomic.Int64
	warm, done := make(chan struct{}), make(chan struct{})
	e.goFn(func() {
		r, err := accept()
		if err != nil {
			e.fail(fmt.Errorf("accept: %w", err))
			return
		}
		buf := make([]byte, bulkReadSize)
		for {
			n, err := r.Read(buf)
			total := got.Add(int64(n))
			if total >= bulkChunk && total-int64(n) < bulkChunk {
				close(warm)
			}
			if total >= target && total-int64(n) < target {
				close(done)
			}
			if err != nil {
				if total < target {
					e.fail(fmt.Errorf("reader: %w after %d of %d bytes", err, total, target))
				}
				return
			}
		}
	})
	wait := func(c chan struct{}) {
		select {
		case <-c:
		case <-e.dead:
		}
	}
	if _, err := w.Write(benchChunk); err != nil {
		e.check(err)
	}
	wait(warm)
	e.check(nil)
	sys := sampleSyscalls()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w.Write(benchChunk); err != nil {
			e.check(err)
		}
	}
	wait(done)
	b.StopTimer()
	sys.report(b)
	e.check(nil)
}
