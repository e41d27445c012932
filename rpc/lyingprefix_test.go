package rpc

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Lengths that lie: a prefix costs its sender a few bytes, so what it
// announces must cost the receiver nothing until the bytes arrive; and a
// length over the receiver's limit ends the frame's session, or the
// part's call, at once.

// TestFrameLongerThanMaxFrameSizeEndsSession opens sessions as fast as it
// can, each sending a DATA frame that announces 16 MiB-1 bytes, past the
// server's MaxFrameSize of 64 KiB, and 100 bytes of it: each gets a
// GOAWAY with PROTOCOL_ERROR and its connection closed, the server's
// session ends with mux.ErrProtocol, goroutines and heap stay within a
// few sessions' worth (bounds: 64 goroutines, 16 MiB), and the victim's
// latency within 10x.
func TestFrameLongerThanMaxFrameSizeEndsSession(t *testing.T) {
	sessions := scaled(300, 3000)
	ended := make(chan error, sessions+16)
	srv := NewServer(OnPeer(func(p *Peer) {
		<-p.Done()
		ended <- p.Err()
	}))
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	addr := serve(t, srv)
	v := echoVictim(t, dial(t, addr), 200)
	lie := append(nativeHeader(nil, 1<<24-1, nfData, nfOpen, 3), make([]byte, 100)...) // stream 1 is the hello
	u := sampleUsage()
	var elapsed time.Duration
	attacked := during(func() {
		start := time.Now()
		for i := range sessions {
			a := dialNative(t, addr, true, nil)
			<-a.welcomed // OnPeer sees admitted sessions only
			if err := a.tryWrite(lie); err != nil {
				t.Errorf("session %d: %v", i, err)
				return
			}
			select {
			case <-a.done:
			case <-time.After(10 * time.Second):
				t.Errorf("session %d: the connection still open 10 s after the lie", i)
				return
			}
			if code := a.goAway.Load() - 1; code != int64(mux.GoAwayProtocolError) {
				t.Errorf("session %d: GOAWAY code %d, want PROTOCOL_ERROR", i, code)
				return
			}
			a.conn.Close()
		}
		elapsed = time.Since(start)
	}, 50, v)[0]
	t.Logf("%d sessions ended for a lying frame length in %v: %.0f/s", sessions, elapsed.Round(time.Millisecond), float64(sessions)/elapsed.Seconds())
	u.check(t, "frame length flood", 64, 16<<20)
	v.check(attacked)
	for i := range sessions {
		select {
		case err := <-ended:
			if !errors.Is(err, mux.ErrProtocol) {
				t.Fatalf("session %d of the attacker's ended with %v, want ErrProtocol", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d sessions ended", i, sessions)
		}
	}
}

// TestFrameClaimingMoreThanArrivesCostsOneFrame opens 100 sessions on
// each transport whose first stream's frame announces the most the server
// accepts (64 KiB on the native transport, where the stream window is
// 256 KiB; 65 535 bytes, smux's most) and sends 10 bytes of it, then
// nothing. Each costs the server what a session costs and one frame's
// payload at most: on the native transport its 32 KiB read buffer, 64 KiB
// of frame and 32 KiB of session; on smux, whose session alone takes
// ~200 KiB (a write queue of 1 024 entries, an accept backlog of as
// many), 320 KiB. The bound on the live heap is that per session plus
// 8 MiB (twice that on the heap in use, garbage included), and a
// constant number of goroutines per session; the victim's latency stays
// within 10x; and each session ends once the keepalive timeout (2 s)
// finds it silent.
func TestFrameClaimingMoreThanArrivesCostsOneFrame(t *testing.T) {
	const keepAliveTimeout = 2 * time.Second
	sessions := scaled(100, 1000)
	needOpenFiles(t, uint64(2*sessions+512))
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := NewServer(MuxConfig(&mux.Config{Transport: tr, KeepAliveInterval: 500 * time.Millisecond, KeepAliveTimeout: keepAliveTimeout}))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		v := echoVictim(t, dial(t, addr, muxOpt(tr)), 200)
		var ends []<-chan struct{}
		u := sampleUsage()
		var held int64
		attacked := during(func() {
			for range sessions {
				if tr == mux.Native {
					a := dialNative(t, addr, true, nil)
					a.write(append(nativeHeader(nil, 64<<10, nfData, nfOpen, a.id()), StreamType, 1, 0, 0, 0, 0, 0, 0, 0, 0))
					ends = append(ends, a.done)
				} else {
					a := dialSmux(t, addr)
					sid := a.sid()
					a.write(append(smuxHeader(smuxFrame(nil, smuxSYN, sid, nil), smuxPSH, 65535, sid), StreamType, 1, 0, 0, 0, 0, 0, 0, 0, 0))
					ends = append(ends, a.done)
				}
			}
			time.Sleep(200 * time.Millisecond)
			held = liveHeapNow() - u.baseLive
			time.Sleep(300 * time.Millisecond)
		}, 50, v)[0]
		t.Logf("%d sessions stalled inside a frame hold %.1f MiB of live heap", sessions, mib(held))
		// Per session, on both sides in this process: readers, writers,
		// keepalives, smux's loops, the Peer's.
		perSession := int64(128 << 10)
		if tr == mux.Smux {
			perSession = 320 << 10
		}
		// Live heap within the bound; heap in use, garbage included,
		// within twice it.
		liveBound := int64(sessions)*perSession + 8<<20
		u.check(t, "stalled frames", sessions*12+64, 2*liveBound)
		if held > liveBound {
			t.Errorf("the stalled sessions hold %.1f MiB", mib(held))
		}
		v.check(attacked)
		deadline := time.After(2*keepAliveTimeout + 5*time.Second)
		for i, end := range ends {
			select {
			case <-end:
			case <-deadline:
				t.Fatalf("session %d, silent inside a frame, still open; KeepAliveTimeout is %v", i, keepAliveTimeout)
			}
		}
	})
}

// TestPartClaimingMoreThanArrivesCostsWhatArrives has 8 sessions of 16
// calls each, on each transport, announce parts of the largest sizes the
// server accepts and send 20 bytes of them: half a call header of 16 MiB
// (MaxHeaderListSize), half a request of 64 MiB (MaxRecvMsgSize) behind a
// call header with a deadline of 1 s; 5 GiB announced in all. The server
// allocates as the bytes come (bound: 16 KiB per call, plus 8 MiB), its
// goroutines stay within a handler per call and a few per session, the
// victim's latency within 10x; the requests that never come end at their
// deadline with DeadlineExceeded, and on the native transport a call
// header cut short by the end of the stream with InvalidArgument.
func TestPartClaimingMoreThanArrivesCostsWhatArrives(t *testing.T) {
	const (
		sessions = 8
		calls    = 16
		deadline = time.Second
	)
	headerLie := rawParts([]byte{partCallHeader, 0x01, 0x00, 0x00, 0x00}, []byte("0123456789abcdefghij"))
	messageLie := rawParts(appendCallHeader(nil, "/test.Echo/Unary", deadline, 0, nil, ""), []byte{partMessage, 0x04, 0x00, 0x00, 0x00}, []byte("0123456789abcdefghij"))
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		srv := NewServer(MaxConcurrentCalls(calls), MaxHeaderListSize(16<<20), MaxRecvMsgSize(64<<20), muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		v := echoVictim(t, dial(t, addr, muxOpt(tr)), 200)
		var attackers []*Peer
		for range sessions {
			attackers = append(attackers, dial(t, addr, muxOpt(tr)))
		}
		u := sampleUsage()
		var held int64
		var errs []error
		var mu sync.Mutex
		attacked := during(func() {
			var streams []*mux.Stream
			for _, p := range attackers {
				for i := range calls {
					wire := messageLie
					if i%2 == 0 {
						wire = headerLie
					}
					streams = append(streams, openCall(t, ctx, p, wire, false))
				}
			}
			time.Sleep(deadline / 2)
			held = liveHeapNow() - u.baseLive
			// The call headers cut short end with their stream, where the
			// transport can end a direction.
			var wg sync.WaitGroup
			for i, st := range streams {
				header := i%2 == 0
				if header && tr == mux.Smux {
					continue
				}
				if header {
					st.CloseWrite()
				}
				wg.Go(func() {
					a, err := readAnswer(st)
					want := codes.DeadlineExceeded
					if header {
						want = codes.InvalidArgument
					}
					if err == nil && status.Code(a.status) != want {
						err = fmt.Errorf("got %v, want %v", a.status, want)
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("call %d: %w", i, err))
						mu.Unlock()
					}
				})
			}
			wg.Wait()
		}, 50, v)[0]
		t.Logf("%d calls announcing %.0f MiB in all, 20 bytes each sent: %.1f MiB of live heap beyond the baseline",
			sessions*calls, float64(sessions*calls/2)*(16+64), mib(held))
		u.check(t, "lying part lengths", sessions*(calls+16)+64, int64(sessions*calls)*16<<10+8<<20)
		v.check(attacked)
		if held > int64(sessions*calls)*16<<10+8<<20 {
			t.Errorf("the lying calls hold %.1f MiB", mib(held))
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPartsOverTheLimitFloodIsResourceExhausted makes 5 000 calls (2 500
// on smux), 16 at a time on each transport, whose call header or request announces 4 GiB-1
// bytes, past the server's limits: each is answered at once with
// ResourceExhausted, and costs the server nothing it keeps (bounds: a
// handler per call and 48 goroutines, 16 MiB), while the victim's
// latency stays within 10x.
func TestPartsOverTheLimitFloodIsResourceExhausted(t *testing.T) {
	const callers = 16
	n := scaled(5_000, 50_000)
	huge := []byte{0xff, 0xff, 0xff, 0xff}
	wires := [][]byte{
		rawParts([]byte{partCallHeader}, huge, []byte("junk")),
		rawParts(appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, ""), []byte{partMessage}, huge, []byte("junk")),
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		n := n
		if tr == mux.Smux {
			n /= 2 // a smux call costs ~5x a native one, ~300 calls/s under -race on a loaded machine
		}
		ctx := testCtx(t, 60*time.Second)
		srv := NewServer(MaxConcurrentCalls(callers), muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		v := echoVictim(t, dial(t, addr, muxOpt(tr)), 200)
		attacker := dial(t, addr, muxOpt(tr))
		u := sampleUsage()
		var elapsed time.Duration
		attacked := during(func() {
			start := time.Now()
			err := concurrently(callers, func(c int) error {
				for i := c; i < n; i += callers {
					st, err := attacker.Session().OpenType(ctx, StreamType)
					if err != nil {
						return err
					}
					st.SetReadDeadline(time.Now().Add(10 * time.Second))
					// The callee may answer and close before the junk is
					// written: the write's error does not matter.
					st.Write(wires[i%2])
					a, err := readAnswer(st)
					st.Close()
					if err == nil && status.Code(a.status) != codes.ResourceExhausted {
						err = fmt.Errorf("got %v", a.status)
					}
					if err != nil {
						return fmt.Errorf("call %d: %w, want ResourceExhausted", i, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			elapsed = time.Since(start)
		}, 50, v)[0]
		t.Logf("%d calls over the limits in %v: %.0f calls/s", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
		u.check(t, "parts over the limit", 2*callers+48, 16<<20)
		v.check(attacked)
		checkEcho(t, ctx, attacker, "server")
	})
}
