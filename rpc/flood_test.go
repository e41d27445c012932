package rpc

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Floods: attackers that make as much work for a Server as they can, as
// fast as they can, while an honest victim on a connection of its own
// keeps calling. Each test states what the flood may cost (goroutines and
// heap beyond the baseline, derived from the configuration) and what the
// attacker must get back.

// floodLimit is the servers' MaxConcurrentCalls in the flood tests.
const floodLimit = 16

// holdCounter counts the attackers' calls that a flood server's handler
// runs, and the most that run at once.
type holdCounter struct {
	running, peak, runs atomic.Int64
}

func (h *holdCounter) enter() {
	h.runs.Add(1)
	n := h.running.Add(1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
}

func (h *holdCounter) leave() { h.running.Add(-1) }

// floodServer serves test.Echo on tr with MaxConcurrentCalls(floodLimit)
// and returns its address. Its unary handler answers the victim's "ping"
// as echoImpl does, and runs hold for an attacker's "hold", counted in h.
func floodServer(t *testing.T, tr mux.Transport, h *holdCounter, hold func(ctx context.Context), opts ...ServerOption) string {
	t.Helper()
	opts = append([]ServerOption{MaxConcurrentCalls(floodLimit), muxOpt(tr)}, opts...)
	srv := NewServer(opts...)
	srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.Value != "hold" {
			return defaultEcho.Unary(ctx, in)
		}
		h.enter()
		defer h.leave()
		hold(ctx)
		return in, nil
	}})
	return serve(t, srv)
}

// unaryWire is the whole of a unary call of method with request value v,
// as a caller sends it: call header, request and end part.
func unaryWire(method, v string) []byte {
	b := appendCallHeader(nil, method, 0, 0, nil, "")
	b, _ = appendMessage(b, wrapperspb.String(v), DefaultMaxSendMsgSize)
	return appendEmptyPart(b, partClientEnd)
}

// batched calls frame(b, i) for i in [0, n) and writes what it appends,
// 512 frames at a time, with write. It returns write's first error.
func batched(n int, frame func(b []byte, i int) []byte, write func([]byte) error) error {
	var b []byte
	for i := range n {
		b = frame(b, i)
		if i%512 == 511 || i == n-1 {
			if err := write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	return nil
}

// TestStreamOpenFloodPastTheLimitIsRefused opens 100 000 call streams as
// fast as the connection takes them, ignoring the server's announced
// limit of 16, each carrying a whole unary call whose handler holds until
// the call ends. Exactly 16 handlers run. On the native transport (raw
// frames) every other stream is refused with RESET(REFUSED), and the
// session goes on (a PING is answered); on smux (raw smux frames, no FIN)
// max(16, limit) others get the refusal status, and the server closes
// every other stream at once. The
// server holds 16 handlers and a few goroutines (bound: 16 + 48 beyond
// the baseline, which holds the victim), at most 16 MiB of heap in use,
// and the victim's latency stays within 10x.
func TestStreamOpenFloodPastTheLimitIsRefused(t *testing.T) {
	n := scaled(100_000, 1_000_000)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		var h holdCounter
		// On smux, the refusers wait for their streams' FIN, which never
		// comes, until the handshake timeout: a minute, so that the same
		// ones wait all along.
		addr := floodServer(t, tr, &h, func(ctx context.Context) { <-ctx.Done() },
			MuxConfig(&mux.Config{Transport: tr, HandshakeTimeout: time.Minute}))
		v := echoVictim(t, dial(t, addr, muxOpt(tr)), 200)
		wire := unaryWire("/test.Echo/Unary", "hold")
		var elapsed time.Duration
		var u *usage
		var attacked latencies
		if tr == mux.Native {
			a := dialNative(t, addr, true, nil)
			if a.limit != floodLimit {
				t.Fatalf("the server announced a limit of %d, want %d", a.limit, floodLimit)
			}
			u = sampleUsage()
			attacked = during(func() {
				start := time.Now()
				err := batched(n, func(b []byte, _ int) []byte { return nativeOpen(b, a.id(), wire, true) }, a.tryWrite)
				if err != nil {
					t.Errorf("flooding: %v", err)
					return
				}
				waitCount(t, 60*time.Second, "the refusals", &a.refused, int64(n-floodLimit))
				elapsed = time.Since(start)
			}, 50, v)[0]
			if err := a.pingPong(10 * time.Second); err != nil {
				t.Fatalf("after the flood: %v", err)
			}
			if r := a.refused.Load(); r != int64(n-floodLimit) {
				t.Errorf("%d of %d streams refused, want all but the %d that fit the limit", r, n, floodLimit)
			}
			if a.resets.Load() != 0 || a.goAway.Load() != 0 {
				t.Errorf("the server answered the flood with %d other RESETs and GOAWAY code %d", a.resets.Load(), a.goAway.Load()-1)
			}
		} else {
			a := dialSmux(t, addr)
			u = sampleUsage()
			attacked = during(func() {
				start := time.Now()
				err := batched(n, func(b []byte, _ int) []byte { return smuxOpenCall(b, a.sid(), wire, false) }, func(b []byte) error {
					a.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
					_, err := a.conn.Write(b)
					return err
				})
				if err != nil {
					t.Errorf("flooding: %v", err)
					return
				}
				// Past the admitted and the refusers, streams are closed at
				// once; the refusers hold theirs until the handshake timeout
				// or the opener's FIN.
				waitCount(t, 60*time.Second, "the closed streams", &a.closed, int64(n-2*floodLimit))
				elapsed = time.Since(start)
			}, 50, v)[0]
			// An admitted stream gets its status in front of the handler's
			// first bytes, which a held call never sends.
			refusers := int64(max(16, floodLimit))
			waitCount(t, 10*time.Second, "the refusals", &a.refused, refusers)
			if r := a.refused.Load(); r != refusers {
				t.Errorf("%d streams got the refusal status; %d wait to", r, refusers)
			}
			if a.admitted.Load() != 0 {
				t.Errorf("%d held calls got their admission status, with no bytes to send", a.admitted.Load())
			}
			t.Logf("smux: %d refused with a status, %d closed", a.refused.Load(), a.closed.Load())
		}
		t.Logf("%d opens in %v: %.0f opens/s", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
		// 16 handlers, the refusers on smux (16 more), and the attacker's
		// and the server's few goroutines per session.
		u.check(t, "stream open flood", 2*floodLimit+48, 16<<20)
		v.check(attacked)
		if p := h.peak.Load(); p != floodLimit {
			t.Errorf("%d handlers ran at once, want the limit %d", p, floodLimit)
		}
	})
}

// TestRapidResetFloodStaysWithinMaxConcurrentCalls opens call streams and
// resets each at once, 100 000 times (25 000 on smux, 100 000 with
// MUXRPC_LONG=1) as fast as the connection takes them, with whole unary calls whose handler works 2 ms ignoring the
// cancellation: on the native transport OPEN with END then RESET(CANCEL),
// on smux (which has no reset) SYN, the call, FIN. No more than 16
// handlers run at once, every stream is accounted for (run, or refused,
// or on smux closed by the server), the session goes on, goroutines stay
// within 16 handlers and the refusers plus 48, heap within 16 MiB, and the
// victim's latency within 10x.
func TestRapidResetFloodStaysWithinMaxConcurrentCalls(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		n := scaled(100_000, 1_000_000)
		if tr == mux.Smux {
			// Each stream costs a smux server two frames written one at a
			// time through smux's send loop (the refusal, the close), and
			// often a handler: 100 000 take a minute under -race on a
			// loaded machine.
			n = scaled(25_000, 100_000)
		}
		var h holdCounter
		addr := floodServer(t, tr, &h, func(context.Context) { time.Sleep(2 * time.Millisecond) })
		v := echoVictim(t, dial(t, addr, muxOpt(tr)), 200)
		wire := unaryWire("/test.Echo/Unary", "hold")
		var elapsed time.Duration
		var u *usage
		var attacked latencies
		if tr == mux.Native {
			a := dialNative(t, addr, true, nil)
			u = sampleUsage()
			attacked = during(func() {
				start := time.Now()
				err := batched(n, func(b []byte, _ int) []byte {
					id := a.id()
					return nativeReset(nativeOpen(b, id, wire, true), id, resetCanceled)
				}, a.tryWrite)
				if err != nil {
					t.Errorf("flooding: %v", err)
					return
				}
				eventually(t, 60*time.Second, "every stream to be run or refused", func() bool {
					return h.running.Load() == 0 && h.runs.Load()+a.refused.Load() == int64(n)
				})
				elapsed = time.Since(start)
			}, 50, v)[0]
			if err := a.pingPong(10 * time.Second); err != nil {
				t.Fatalf("after the flood: %v", err)
			}
			t.Logf("native: %d handlers ran, %d streams refused", h.runs.Load(), a.refused.Load())
		} else {
			a := dialSmux(t, addr)
			u = sampleUsage()
			attacked = during(func() {
				start := time.Now()
				err := batched(n, func(b []byte, _ int) []byte { return smuxOpenCall(b, a.sid(), wire, true) }, func(b []byte) error {
					a.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
					_, err := a.conn.Write(b)
					return err
				})
				if err != nil {
					t.Errorf("flooding: %v", err)
					return
				}
				waitCount(t, 60*time.Second, "the streams the server closed", &a.closed, int64(n))
				eventually(t, 10*time.Second, "the handlers to return", func() bool { return h.running.Load() == 0 })
				elapsed = time.Since(start)
			}, 50, v)[0]
			t.Logf("smux: %d handlers ran, %d admitted and %d refused with a status, %d closed", h.runs.Load(), a.admitted.Load(), a.refused.Load(), a.closed.Load())
		}
		t.Logf("%d opens and resets in %v: %.0f/s", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
		u.check(t, "rapid reset flood", 2*floodLimit+48, 16<<20)
		v.check(attacked)
		if p := h.peak.Load(); p > floodLimit {
			t.Errorf("%d handlers ran at once, MaxConcurrentCalls %d", p, floodLimit)
		}
		if h.runs.Load() == 0 {
			t.Errorf("no handler ran")
		}
	})
}

// TestUnknownMethodFloodIsAnsweredUnimplemented calls unknown services
// and methods as fast as 32 callers can, 10 000 calls, on each transport:
// every call fails with Unimplemented, the server's goroutines stay
// within its limit of 16 calls and the callers' plus 48, heap within
// 16 MiB, and the victim's latency within 10x. On the native transport a
// raw attacker then pipelines 50 000 such calls past the limit, without
// waiting for answers: each is answered with an Unimplemented trailer or
// refused, none is lost.
func TestUnknownMethodFloodIsAnsweredUnimplemented(t *testing.T) {
	const callers = 32
	n := scaled(10_000, 200_000)
	methods := []string{"/nope.Svc/Method", "/test.Echo/Nope"}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		var h holdCounter
		addr := floodServer(t, tr, &h, func(context.Context) {})
		v := echoVictim(t, dial(t, addr, muxOpt(tr)), 200)
		attacker := dial(t, addr, muxOpt(tr))
		u := sampleUsage()
		var elapsed time.Duration
		var next atomic.Int64
		attacked := during(func() {
			start := time.Now()
			err := concurrently(callers, func(int) error {
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					err := attacker.Invoke(context.Background(), methods[i%2], wrapperspb.String("x"), new(wrapperspb.StringValue))
					if status.Code(err) != codes.Unimplemented {
						return fmt.Errorf("call %d of %s: got %v, want Unimplemented", i, methods[i%2], err)
					}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			elapsed = time.Since(start)
		}, 50, v)[0]
		t.Logf("%d calls to unknown methods in %v: %.0f calls/s", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
		u.check(t, "unknown method flood", callers+floodLimit+48, 16<<20)
		v.check(attacked)

		if tr != mux.Native {
			return
		}
		t.Run("pipelined past the limit", func(t *testing.T) {
			pipelined := scaled(50_000, 500_000)
			var mu sync.Mutex
			var unimplemented, other int64
			var firstOther error
			a := dialNative(t, addr, true, func(id uint32, data []byte) {
				err := trailerStatus(data)
				mu.Lock()
				defer mu.Unlock()
				if status.Code(err) == codes.Unimplemented {
					unimplemented++
				} else if other++; firstOther == nil {
					firstOther = fmt.Errorf("stream %d answered %v", id, err)
				}
			})
			wires := [][]byte{unaryWire(methods[0], "x"), unaryWire(methods[1], "x")}
			u := sampleUsage()
			attacked := during(func() {
				start := time.Now()
				err := batched(pipelined, func(b []byte, i int) []byte { return nativeOpen(b, a.id(), wires[i%2], true) }, a.tryWrite)
				if err != nil {
					t.Errorf("flooding: %v", err)
					return
				}
				eventually(t, 60*time.Second, "every call to be answered or refused", func() bool {
					return a.ended.Load()+a.refused.Load() == int64(pipelined)
				})
				elapsed = time.Since(start)
			}, 50, v)[0]
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%d pipelined calls in %v: %.0f calls/s; %d answered Unimplemented, %d refused",
				pipelined, elapsed.Round(time.Millisecond), float64(pipelined)/elapsed.Seconds(), unimplemented, a.refused.Load())
			u.check(t, "pipelined unknown method flood", floodLimit+48, 16<<20)
			v.check(attacked)
			if other > 0 {
				t.Errorf("%d calls answered otherwise; first: %v", other, firstOther)
			}
			if unimplemented == 0 {
				t.Errorf("no call was answered")
			}
			if err := a.pingPong(10 * time.Second); err != nil {
				t.Fatalf("after the flood: %v", err)
			}
		})
	})
}

// trailerStatus returns the status of the trailer that ends data, the
// parts a callee sent on a call.
func trailerStatus(data []byte) error {
	for len(data) >= partPrefixLen {
		kind, n := data[0], int(binary.BigEndian.Uint32(data[1:]))
		if len(data) < partPrefixLen+n {
			break
		}
		payload := data[partPrefixLen : partPrefixLen+n]
		data = data[partPrefixLen+n:]
		if kind == partTrailer {
			tl, err := parseTrailer(payload)
			if err != nil {
				return err
			}
			return tl.err()
		}
	}
	return fmt.Errorf("no trailer in the answer")
}
