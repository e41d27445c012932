package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// link is one connection through a proxy: the client's socket and the
// target's.
type link struct {
	p              *Proxy
	client, target *net.TCPConn
}

// newLink starts a proxy to a fresh loopback listener and connects through
// it; everything closes when the test ends.
func newLink(t *testing.T, setup func(*Proxy)) link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, err := New(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if setup != nil {
		setup(p)
	}
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitConns(t, p, 1) // the proxy may see the pair a moment after the target does
	return link{p, c.(*net.TCPConn), s.(*net.TCPConn)}
}

// readAll reads from c until EOF or an error, within d, and returns what
// it read and the error that ended it (nil for EOF).
func readAll(c net.Conn, d time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c)
}

// randomBytes returns n bytes of a fixed pseudo-random sequence.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// wantNothing fails the test if c delivers anything, or ends, within d.
func wantNothing(t *testing.T, c net.Conn, d time.Duration, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read %d bytes, %v; want nothing", what, n, err)
	}
	c.SetReadDeadline(time.Time{})
}

// TestForwardsTransparently sends bytes both ways through a proxy without
// faults: they arrive intact, a half-close reaches the other end as an end
// of file while the other way goes on, and Stats counts the bytes.
func TestForwardsTransparently(t *testing.T) {
	l := newLink(t, nil)
	up, down := randomBytes(200<<10), []byte("answer")
	errc := make(chan error, 1)
	go func() {
		_, err := l.client.Write(up)
		if err == nil {
			err = l.client.CloseWrite()
		}
		errc <- err
	}()
	got, err := readAll(l.target, 10*time.Second)
	if err != nil || !bytes.Equal(got, up) {
		t.Fatalf("the target read %d bytes (%v), want the %d sent, then EOF", len(got), err, len(up))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := l.target.Write(down); err != nil {
		t.Fatalf("writing back after the client's half-close: %v", err)
	}
	l.target.CloseWrite()
	if got, err := readAll(l.client, 10*time.Second); err != nil || !bytes.Equal(got, down) {
		t.Fatalf("the client read %q (%v), want %q then EOF", got, err, down)
	}
	if s := l.p.Stats(ToTarget); s.Bytes != int64(len(up)) {
		t.Errorf("Stats(ToTarget).Bytes = %d, want %d", s.Bytes, len(up))
	}
	if s := l.p.Stats(Both); s.Bytes != int64(len(up)+len(down)) {
		t.Errorf("Stats(Both).Bytes = %d, want %d", s.Bytes, len(up)+len(down))
	}
	waitConns(t, l.p, 0)
}

// waitConns waits up to 5 s for p to hold n connections.
func waitConns(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Conns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy holds %d connections, want %d", p.Conns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCutRSTResetsBothEnds cuts a connection with RST while both ends have
// data in flight: each end's read fails with ECONNRESET within 2 s, and
// the proxy forgets the connection.
func TestCutRSTResetsBothEnds(t *testing.T) {
	l := newLink(t, nil)
	l.client.Write([]byte("x"))
	if _, err := io.ReadFull(l.target, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	l.p.Cut(RST, Both)
	for _, c := range []net.Conn{l.client, l.target} {
		_, err := readAll(c, 5*time.Second)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read after the cut: %v, want ECONNRESET", err)
		}
	}
	if d := time.Since(cut); d > 2*time.Second {
		t.Errorf("the reset took %v to arrive", d)
	}
	waitConns(t, l.p, 0)
}

// TestCutFINClosesBothEndsGracefully cuts a connection with FIN: each end
// reads what was forwarded before and then an end of file, a write of its
// own still succeeds (the proxy drops it), and once both ends close, the
// proxy forgets the connection.
func TestCutFINClosesBothEndsGracefully(t *testing.T) {
	l := newLink(t, nil)
	l.target.Write([]byte("before"))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(l.client, buf); err != nil {
		t.Fatal(err)
	}
	l.p.Cut(FIN, Both)
	for _, c := range []*net.TCPConn{l.client, l.target} {
		if got, err := readAll(c, 5*time.Second); err != nil || len(got) != 0 {
			t.Fatalf("read after the cut: %q, %v; want EOF", got, err)
		}
		if _, err := c.Write([]byte("after")); err != nil {
			t.Errorf("a write after the FIN: %v", err)
		}
	}
	if n := l.p.Conns(); n != 1 {
		t.Errorf("the proxy holds %d connections before the ends close, want 1", n)
	}
	l.client.Close()
	l.target.Close()
	waitConns(t, l.p, 0)
}

// TestCutOneEndLeavesTheOtherSilent cuts only the target's end, each way
// in turn: the target sees the reset or the end of file, the client sees
// nothing at all, its writes are not refused, and its socket stays open
// until the proxy closes, which then ends it.
func TestCutOneEndLeavesTheOtherSilent(t *testing.T) {
	for _, mode := range []CutMode{RST, FIN} {
		t.Run(mode.String(), func(t *testing.T) {
			l := newLink(t, nil)
			l.p.Cut(mode, ToTarget)
			_, err := readAll(l.target, 5*time.Second)
			if mode == RST && !errors.Is(err, syscall.ECONNRESET) || mode == FIN && err != nil {
				t.Fatalf("the target's read after the cut: %v", err)
			}
			if _, err := l.client.Write([]byte("into the void")); err != nil {
				t.Fatalf("the client's write: %v", err)
			}
			wantNothing(t, l.client, 300*time.Millisecond, "the client after the target's end was cut")
			if n := l.p.Conns(); n != 1 {
				t.Fatalf("the proxy holds %d connections, want the client's still open", n)
			}
			l.p.Close()
			if _, err := readAll(l.client, 5*time.Second); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the client's connection outlived the proxy: %v", err)
			}
		})
	}
}

// TestSilenceHoldsBytesUntilResumed silences the way to the client: the
// target's bytes do not arrive while it is silent, the other way still
// works, and on resuming everything arrives in order.
func TestSilenceHoldsBytesUntilResumed(t *testing.T) {
	l := newLink(t, nil)
	l.p.Silence(ToClient, true)
	l.target.Write([]byte("held"))
	wantNothing(t, l.client, 300*time.Millisecond, "a silent link")
	l.client.Write([]byte("up"))
	l.target.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(l.target, make([]byte, 2)); err != nil {
		t.Fatalf("the way that was not silenced: %v", err)
	}
	l.target.Write([]byte(" back"))
	l.p.Silence(ToClient, false)
	got := make([]byte, len("held back"))
	l.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(l.client, got); err != nil || string(got) != "held back" {
		t.Fatalf("after resuming: %q, %v", got, err)
	}
}

// TestSilenceHoldsTheEnd silences the way to the client and then ends
// the target's side, with a half-close and then with a reset: while the
// link is silent, the client sees neither; once it speaks again, it reads
// the end of file, or the reset.
func TestSilenceHoldsTheEnd(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(map[bool]string{false: "FIN", true: "RST"}[reset], func(t *testing.T) {
			l := newLink(t, nil)
			l.p.Silence(ToClient, true)
			if reset {
				l.target.SetLinger(0)
				l.target.Close()
			} else {
				l.target.CloseWrite()
			}
			wantNothing(t, l.client, 300*time.Millisecond, "a silent link after the target's end")
			l.p.Silence(ToClient, false)
			_, err := readAll(l.client, 5*time.Second)
			if reset && !errors.Is(err, syscall.ECONNRESET) || !reset && err != nil {
				t.Fatalf("after resuming: %v", err)
			}
		})
	}
}

// TestThrottleLimitsRate sends 96 KiB through a link throttled to 64 KiB/s:
// they arrive intact, and no sooner than the rate allows (the bucket's
// burst, 50 ms worth, aside).
func TestThrottleLimitsRate(t *testing.T) {
	const rate, n = 64 << 10, 96 << 10
	l := newLink(t, func(p *Proxy) { p.Throttle(ToTarget, rate) })
	data := randomBytes(n)
	start := time.Now()
	go func() {
		l.client.Write(data)
		l.client.CloseWrite()
	}()
	got, err := readAll(l.target, 20*time.Second)
	took := time.Since(start)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (%v), want the %d sent", len(got), err, n)
	}
	least := time.Duration(n-rate/20) * time.Second / rate
	if took < least {
		t.Errorf("%d bytes crossed in %v, faster than %d B/s allows (%v)", n, took, rate, least)
	}
	t.Logf("%d bytes at %d B/s took %v (%.0f B/s)", n, rate, took, float64(n)/took.Seconds())
}

// TestSplitWritesEveryPiece splits the way to the target one byte at a
// time, and the way back at random sizes up to 7: both arrive intact, and
// the proxy wrote one piece per byte, and more than one piece per 7 bytes.
func TestSplitWritesEveryPiece(t *testing.T) {
	l := newLink(t, func(p *Proxy) {
		p.Split(ToTarget, Every(1), 0)
		p.Split(ToClient, Random(7, 7), 0)
	})
	up, down := randomBytes(3000), randomBytes(5000)
	go func() { l.client.Write(up); l.client.CloseWrite() }()
	go func() { l.target.Write(down); l.target.CloseWrite() }()
	if got, err := readAll(l.target, 10*time.Second); err != nil || !bytes.Equal(got, up) {
		t.Fatalf("the target read %d bytes (%v), want the %d sent", len(got), err, len(up))
	}
	if got, err := readAll(l.client, 10*time.Second); err != nil || !bytes.Equal(got, down) {
		t.Fatalf("the client read %d bytes (%v), want the %d sent", len(got), err, len(down))
	}
	if s := l.p.Stats(ToTarget); s.Writes != int64(len(up)) {
		t.Errorf("one byte at a time: %d writes for %d bytes", s.Writes, len(up))
	}
	if s := l.p.Stats(ToClient); s.Writes < int64(len(down)/7) || s.Writes >= int64(len(down)) {
		t.Errorf("random pieces up to 7: %d writes for %d bytes", s.Writes, len(down))
	}
}

// TestSplitterSeesEveryByteInOrder gives the proxy a Splitter that cuts
// after every 0 byte: it is shown every byte once, in order, and the
// pieces it chose are the ones written, so a Splitter can follow a
// protocol.
func TestSplitterSeesEveryByteInOrder(t *testing.T) {
	var mu sync.Mutex
	var seen bytes.Buffer
	pieces := 0
	atZero := SplitFunc(func(p []byte) int {
		n := bytes.IndexByte(p, 0) + 1
		if n == 0 {
			n = len(p)
		}
		mu.Lock()
		seen.Write(p[:n])
		pieces++
		mu.Unlock()
		return n
	})
	l := newLink(t, func(p *Proxy) { p.Split(ToTarget, func() Splitter { return atZero }, time.Millisecond) })
	data := bytes.Repeat([]byte("abc\x00defgh\x00\x00"), 50)
	go func() { l.client.Write(data); l.client.CloseWrite() }()
	if got, err := readAll(l.target, 10*time.Second); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the target read %q (%v)", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(seen.Bytes(), data) {
		t.Errorf("the Splitter was shown %q, want each byte once, in order", seen.Bytes())
	}
	if s := l.p.Stats(ToTarget); s.Writes != int64(pieces) || pieces != 150 {
		t.Errorf("%d writes for the %d pieces chosen, want 150", s.Writes, pieces)
	}
}
