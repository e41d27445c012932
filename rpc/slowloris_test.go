package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
)

// Slowloris: peers that connect and then send too little, too slowly, to
// hold what the server spends on them. PROTOCOL.md section 1.3 bounds the
// handshakes (at most 1 024 pending, the oldest shed beyond, each ended by
// the handshake timeout); MaxConcurrentCalls bounds the calls of an
// established session that never finish their call header or request.

// Bounds of mux.Listener (PROTOCOL.md, section 1.3), as the tests see
// them from outside the package.
const (
	maxPendingHandshakes = 1024
	handshakeReadBuffer  = 32 << 10 // allocated once a connection's preface is in
)

// slowHello is what a slowloris connection sends of its handshake, on a
// transport, before it falls silent.
type slowHello struct {
	name  string
	hello []byte
}

// slowHellos returns, for tr, the three ways to stall a handshake:
// nothing at all, half the first bytes, and all but the end of the
// settings.
func slowHellos(tr mux.Transport) []slowHello {
	if tr == mux.Smux {
		// The smux client's first frames: SYN of its settings stream, then
		// a PSH with the settings (see mux/smux.go, readSmuxHello).
		syn := smuxHeader(nil, 0, 0, 3)
		return []slowHello{
			{"silent", nil},
			{"half a frame header", syn[:4]},
			{"half the settings", append(smuxHeader(syn, 2, 3, 3), 0xff)},
		}
	}
	preface := []byte("MUXRPC\x00\x01")
	// A SETTINGS frame announcing 18 bytes of payload, 6 of which come.
	settings := append(nativeHeader(nil, 18, 0x5, 0, 0), 0, 1, 0, 0, 0, 8)
	return []slowHello{
		{"silent", nil},
		{"half a preface", preface[:4]},
		{"half the settings", append(preface, settings...)},
	}
}

// nativeHeader appends a native frame header (PROTOCOL.md, section 2.1).
func nativeHeader(b []byte, length uint32, typ, flags byte, id uint32) []byte {
	b = append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags)
	return binary.BigEndian.AppendUint32(b, id)
}

// smuxHeader appends a smux frame header: version 2, cmd, little-endian
// length and stream id.
func smuxHeader(b []byte, cmd byte, length uint16, sid uint32) []byte {
	b = append(b, 2, cmd)
	b = binary.LittleEndian.AppendUint16(b, length)
	return binary.LittleEndian.AppendUint32(b, sid)
}

// needOpenFiles makes sure the process may open n files, raising its soft
// limit for the test if it must; a test that cannot have them skips, or
// fails under CI, where the limit is the project's to set.
func needOpenFiles(t *testing.T, n uint64) {
	t.Helper()
	skip := t.Skipf // outside CI only: under CI=true a low file limit fails the test
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

// slowConn is a connection that sent part of its handshake.
type slowConn struct {
	conn   net.Conn
	kind   string
	opened time.Time
}

// closedByServer reports whether the server closed c, waiting until
// deadline at most.
func (c slowConn) closedByServer(deadline time.Time) bool {
	c.conn.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, c.conn)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestSlowlorisCostsBoundedAndDelaysNoHonestPeer attacks a Server, on
// each transport, with connections that stall their handshake (silent,
// half the first bytes, all but the end of the settings), more of them
// than the Listener runs handshakes at once, and with established
// sessions whose calls stall inside their call header or after it,
// MaxConcurrentCalls of them per session. Meanwhile an honest peer's
// calls, and honest clients' new connections, are measured. It checks
// that
//   - the oldest stalled handshakes are shed when the 1 024 limit is
//     reached, and every other one is closed at the handshake timeout;
//   - goroutines stay within 2 per pending handshake and a constant plus
//     MaxConcurrentCalls per established session; heap within the 32 KiB
//     read buffer (plus 4 KiB) per pending handshake and 96 KiB per
//     stalled call, plus 16 MiB;
//   - the honest peer's call latency, and a new client's connection and
//     first call, stay within 10 times the undisturbed figures (or the
//     floors of pressure_test.go).
//
// A stalled call holds its slot until its session ends: a call header has
// no timeout of its own, so MaxConcurrentCalls is the bound per session.
func TestSlowlorisCostsBoundedAndDelaysNoHonestPeer(t *testing.T) {
	const (
		maxCalls  = 8
		hsTimeout = 8 * time.Second
	)
	perKind := scaled(400, 1500) // stalled handshakes of each kind: 3 kinds, past the 1 024 limit
	sessions := scaled(16, 64)   // established sessions whose calls stall
	needOpenFiles(t, uint64(2*(3*perKind+sessions)+1024))
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := NewServer(MaxConcurrentCalls(maxCalls), MuxConfig(&mux.Config{Transport: tr, HandshakeTimeout: hsTimeout}))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		honest := dial(t, addr, muxOpt(tr))
		calls := echoVictim(t, honest, 200)
		dials := newVictim(t, "new connection and first call", 50, func(ctx context.Context) error {
			p, err := Dial(ctx, addr, muxOpt(tr))
			if err != nil {
				return err
			}
			defer p.Close()
			return echoCall(ctx, p)
		})

		var conns []slowConn
		var stalled []*mux.Session
		t.Cleanup(func() {
			for _, c := range conns {
				c.conn.Close()
			}
			for _, s := range stalled {
				s.Kill()
			}
		})
		ctx := testCtx(t, 60*time.Second)
		var attackErr error
		u := sampleUsage()
		var liveHeld int64
		var started time.Time
		attack := func() {
			started = time.Now()
			for _, h := range slowHellos(tr) {
				for range perKind {
					c, err := net.DialTimeout("tcp", addr, 5*time.Second)
					if err != nil {
						attackErr = err
						return
					}
					conns = append(conns, slowConn{conn: c, kind: h.name, opened: time.Now()})
					if len(h.hello) > 0 {
						if _, err := c.Write(h.hello); err != nil {
							attackErr = err
							return
						}
					}
				}
			}
			// The oldest were shed as the newest came, long before their
			// handshake timeout.
			shed := len(conns) - maxPendingHandshakes
			for _, c := range conns[:shed] {
				if !c.closedByServer(time.Now().Add(time.Second)) {
					attackErr = fmt.Errorf("a %s connection, among the %d oldest past the limit, was not shed", c.kind, shed)
					return
				}
			}
			if late := time.Since(conns[0].opened); late > hsTimeout-time.Second {
				attackErr = fmt.Errorf("setting up the stalled handshakes took %v: too long to tell shedding from the handshake timeout of %v", late, hsTimeout)
				return
			}
			half := callHeaderWith("/test.Echo/Unary")
			half = half[:len(half)/2]
			whole := callHeaderWith("/test.Echo/Unary")
			for i := range sessions {
				s, err := mux.Dial(ctx, "tcp", addr, &mux.Config{Transport: tr})
				if err != nil {
					attackErr = err
					return
				}
				stalled = append(stalled, s)
				if err := sendHello(ctx, s); err != nil {
					attackErr = err
					return
				}
				wire := half
				if i%2 == 1 {
					wire = whole
				}
				for range maxCalls {
					st, err := s.OpenType(ctx, StreamType)
					if err == nil {
						_, err = st.Write(wire)
					}
					if err != nil {
						attackErr = err
						return
					}
				}
			}
			// Hold, with everything in place, while the victims measure.
			time.Sleep(500 * time.Millisecond)
			liveHeld = liveHeapNow()
			time.Sleep(500 * time.Millisecond)
		}
		attacked := during(attack, 20, calls, dials)
		if attackErr != nil {
			t.Fatalf("the attack: %v", attackErr)
		}
		t.Logf("%d stalled handshakes (%d of each kind) and %d sessions of %d stalled calls set up in %v",
			len(conns), perKind, sessions, maxCalls, time.Since(started).Round(time.Millisecond))
		t.Logf("live heap while held: %.1f MiB beyond the baseline", mib(liveHeld-u.baseLive))
		// A pending handshake costs one goroutine; an established session
		// a few on each side (reader, writer, keepalive; smux's own) and
		// the Peer's, and a goroutine per call it holds; 128 more for the
		// victims, whose new connections come and go.
		pending := min(len(conns), maxPendingHandshakes)
		perSession := 16
		u.check(t, "slowloris", pending+sessions*(perSession+maxCalls)+128,
			int64(pending)*(handshakeReadBuffer+4<<10)+int64(sessions*maxCalls)*96<<10+16<<20)
		calls.check(attacked[0])
		dials.check(attacked[1])

		// The others end at their handshake timeout, not much later.
		for _, c := range conns {
			if !c.closedByServer(c.opened.Add(hsTimeout + 3*time.Second)) {
				t.Fatalf("a %s connection still open %v after it was made; HandshakeTimeout is %v", c.kind, time.Since(c.opened), hsTimeout)
			}
		}
		// The stalled calls hold their sessions' slots, and the sessions
		// live on: only their end frees the slots.
		for _, s := range stalled {
			if err := s.Err(); err != nil {
				t.Fatalf("a session with stalled calls ended: %v", err)
			}
		}
		held := 0
		for _, p := range srv.Peers() {
			if n := p.Session().NumStreams(); n == maxCalls {
				held++
			}
		}
		if held != sessions {
			t.Fatalf("%d sessions hold %d stalled calls, want %d", held, maxCalls, sessions)
		}
		if err := echoCall(ctx, honest); err != nil {
			t.Fatal(err)
		}
	})
}
