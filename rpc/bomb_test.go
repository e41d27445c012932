package rpc

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Bombs: headers, metadata, trailers and status details as large, or of
// as many entries, as the receiver's MaxHeaderListSize (1 MiB by default)
// lets through, and past it; sent by a caller to a Server, and by a
// hostile callee to its caller. What a receiver spends on a part is
// bounded by the part's size, but not by it alone: each metadata entry
// costs a map entry, a slice and a string, so a part of tiny entries is
// the worst case per byte. The tests measure that worst case and bound
// it per call in flight.
//
// Two bombs are in flight at a time, no more than the machine's cores:
// decoding a megabyte of tiny entries is work for a core (~0.1 s under
// -race) and ~18 MiB of garbage, and with more of them than cores the
// victim waits for the scheduler and the collector, not for this code
// (8 in flight took its p90 to ~100 ms under -race, 200 times the
// undisturbed figure, though its p50 stayed put).

// headerBombFactor bounds the heap a call in flight may use per byte of
// its header or trailer: the part's buffer, the metadata decoded from it,
// and the garbage of decoding it. Measured on 1 MiB of tiny entries: ~14
// bytes allocated and ~8 kept per byte (a metadata entry of a 5-byte key
// and an empty value is 11 bytes on the wire, and ~100 bytes in a map).
const headerBombFactor = 24

// appendBombEntries appends metadata entries of field until the part
// begun at start holds size bytes of payload, give or take an entry:
// distinct keys with empty values, or one key repeated.
func appendBombEntries(b []byte, start int, field protowire.Number, size int, distinct bool) []byte {
	for i := 0; len(b)-start-partPrefixLen < size-16; i++ {
		k := "k"
		if distinct {
			k = fmt.Sprintf("%x", i)
		}
		b = appendEntries(b, field, k, "")
	}
	return b
}

// headerBomb is a call header for /test.Echo/Unary of about size bytes.
type headerBomb struct {
	name string
	want codes.Code
	wire []byte // the whole call
}

// callHeaderBombs returns call headers that fill, or overflow, limit.
func callHeaderBombs(limit int) []headerBomb {
	begin := func() ([]byte, int) {
		b, start := beginPart(nil, partCallHeader)
		b = protowire.AppendTag(b, fieldCallMethod, protowire.BytesType)
		return protowire.AppendString(b, "/test.Echo/Unary"), start
	}
	rest := unaryWire("/test.Echo/Unary", "bombed")[len(appendCallHeader(nil, "/test.Echo/Unary", 0, nil)):]
	call := func(b []byte, start int) []byte { return append(endPart(b, start), rest...) }

	b, start := begin()
	huge := call(appendEntries(b, fieldCallMetadata, "big", strings.Repeat("v", limit-64)), start)
	b, start = begin()
	distinct := call(appendBombEntries(b, start, fieldCallMetadata, limit, true), start)
	b, start = begin()
	same := call(appendBombEntries(b, start, fieldCallMetadata, limit, false), start)
	b, start = begin()
	over := call(appendBombEntries(b, start, fieldCallMetadata, limit+64, true), start)
	b, start = begin()
	b = appendBombEntries(b, start, fieldCallMetadata, limit-64, true)
	invalid := call(appendEntries(b, fieldCallMetadata, "Not A Key", ""), start)
	return []headerBomb{
		{"one value of the whole size", codes.OK, huge},
		{"distinct keys, tiny entries", codes.OK, distinct},
		{"one key, as many values", codes.OK, same},
		{"tiny entries past the limit", codes.ResourceExhausted, over},
		{"tiny entries, the last one invalid", codes.InvalidArgument, invalid},
	}
}

// TestCallHeaderBombsCostBoundedAndDelayNoHonestPeer sends a Server, on
// each transport, calls whose call header fills its MaxHeaderListSize of
// 1 MiB in the costliest ways (one huge value; ~100 000 tiny entries of
// distinct keys, or of one key), or overflows it, or ends in an invalid
// entry, 2 at a time (MaxConcurrentCalls): each is served (OK), or
// answered ResourceExhausted or InvalidArgument; the server's heap stays
// within headerBombFactor times the limit per call in flight, plus 16
// MiB; and a victim's latency within 10x.
func TestCallHeaderBombsCostBoundedAndDelayNoHonestPeer(t *testing.T) {
	const (
		limit    = defaultMaxHeaderListSize
		inFlight = 2
	)
	perBomb := scaled(16, 128)
	bombs := callHeaderBombs(limit)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 120*time.Second)
		srv := NewServer(MaxConcurrentCalls(inFlight), muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		v := echoVictim(t, dial(t, addr, muxOpt(tr)), 200)
		attacker := dial(t, addr, muxOpt(tr))
		for _, bomb := range bombs {
			t.Run(bomb.name, func(t *testing.T) {
				u := sampleUsage()
				var allocated uint64
				var elapsed time.Duration
				attacked := during(func() {
					start := time.Now()
					var err error
					allocated = allocatedDuring(func() {
						err = concurrently(inFlight, func(c int) error {
							for i := c; i < perBomb; i += inFlight {
								st, err := attacker.Session().OpenType(ctx, StreamType)
								if err != nil {
									return err
								}
								st.SetReadDeadline(time.Now().Add(30 * time.Second))
								st.WriteLast(bomb.wire) // may fail once the callee has answered
								a, err := readAnswer(st)
								st.Close()
								if err == nil && status.Code(a.status) != bomb.want {
									err = fmt.Errorf("got %v", a.status)
								}
								if err != nil {
									return fmt.Errorf("call %d: %w, want %v", i, err, bomb.want)
								}
							}
							return nil
						})
					})
					if err != nil {
						t.Error(err)
					}
					elapsed = time.Since(start)
				}, 20, v)[0]
				t.Logf("%d calls with a call header of %d KiB in %v: %.0f calls/s, %.1f MiB allocated per call (%.1f bytes per byte)",
					perBomb, len(bomb.wire)>>10, elapsed.Round(time.Millisecond), float64(perBomb)/elapsed.Seconds(),
					float64(allocated)/float64(perBomb)/(1<<20), float64(allocated)/float64(perBomb*len(bomb.wire)))
				u.check(t, "call header bombs", 2*inFlight+48, int64(inFlight*headerBombFactor*limit)+16<<20)
				v.check(attacked)
				if per := allocated / uint64(perBomb); per > uint64(headerBombFactor*len(bomb.wire)) {
					t.Errorf("a call with a call header of %d KiB allocated %.1f MiB", len(bomb.wire)>>10, float64(per)/(1<<20))
				}
			})
		}
		checkEcho(t, ctx, attacker, "server")
	})
}

// responseBomb is what a hostile callee answers a call with.
type responseBomb struct {
	name    string
	want    codes.Code
	wire    []byte // the callee's parts
	details int    // the status details it carries
	message int    // the length of its status message
}

// responseBombs returns answers that fill, or overflow, limit: a
// response header, trailer metadata, status details, a status message.
func responseBombs(limit int) []responseBomb {
	msg, _ := appendMessage(nil, wrapperspb.String("bombed"), DefaultMaxSendMsgSize)
	okTrailer := appendEmptyPart(nil, partTrailer)

	b, start := beginPart(nil, partResponseHeader)
	header := rawParts(endPart(appendBombEntries(b, start, fieldHeaderMetadata, limit, true), start), msg, okTrailer)

	b, start = beginPart(nil, partTrailer)
	trailerMD := rawParts(msg, endPart(appendBombEntries(b, start, fieldTrailerMetadata, limit, true), start))

	b, start = beginPart(nil, partTrailer)
	b = protowire.AppendTag(b, fieldTrailerCode, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(codes.Aborted))
	detail, _ := anypb.New(wrapperspb.Bytes(make([]byte, limit/maxStatusDetails-64)))
	encoded, _ := proto.Marshal(detail)
	for range maxStatusDetails {
		b = protowire.AppendTag(b, fieldTrailerDetails, protowire.BytesType)
		b = protowire.AppendBytes(b, encoded)
	}
	details := endPart(b, start)

	b, start = beginPart(nil, partTrailer)
	b = protowire.AppendTag(b, fieldTrailerCode, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(codes.Aborted))
	b = protowire.AppendTag(b, fieldTrailerMessage, protowire.BytesType)
	message := endPart(protowire.AppendString(b, strings.Repeat("m", limit-64)), start)

	b, start = beginPart(nil, partTrailer)
	over := rawParts(msg, endPart(appendBombEntries(b, start, fieldTrailerMetadata, limit+64, true), start))

	return []responseBomb{
		{"response header of tiny entries", codes.OK, header, 0, 0},
		{"trailer metadata of tiny entries", codes.OK, trailerMD, 0, 0},
		{"64 status details of the whole size", codes.Aborted, details, maxStatusDetails, 0},
		{"status message of the whole size", codes.Aborted, message, 0, limit - 64},
		{"trailer of tiny entries past the limit", codes.ResourceExhausted, over, 0, 0},
	}
}

// TestResponseBombsCostTheCallerBounded has a hostile callee answer, on
// each transport, every call with a response header or trailer that
// fills the caller's MaxHeaderListSize of 1 MiB in the costliest ways
// (tiny metadata entries, 64 status details, one huge status message) or
// overflows it, to 2 calls at a time: each call gets the callee's status
// (what overflows, ResourceExhausted) with its metadata or details, the
// caller's heap stays within headerBombFactor times the limit per call in
// flight plus 16 MiB, and the same process's calls to an honest server
// keep their latency within 10x.
func TestResponseBombsCostTheCallerBounded(t *testing.T) {
	const (
		limit    = defaultMaxHeaderListSize
		inFlight = 2
	)
	perBomb := scaled(16, 128)
	bombs := responseBombs(limit)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 120*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		v := echoVictim(t, dial(t, serve(t, srv), muxOpt(tr)), 200)
		var mu sync.Mutex
		answer := bombs[0].wire
		p := rawCallee(t, tr, func(st *mux.Stream) {
			mu.Lock()
			wire := answer
			mu.Unlock()
			st.WriteLast(wire)
			io.Copy(io.Discard, st)
		})
		for _, bomb := range bombs {
			t.Run(bomb.name, func(t *testing.T) {
				mu.Lock()
				answer = bomb.wire
				mu.Unlock()
				u := sampleUsage()
				var allocated uint64
				var elapsed time.Duration
				attacked := during(func() {
					start := time.Now()
					var err error
					allocated = allocatedDuring(func() {
						err = concurrently(inFlight, func(c int) error {
							for i := c; i < perBomb; i += inFlight {
								callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
								_, err := echoClient{p}.Unary(callCtx, wrapperspb.String("x"))
								cancel()
								if status.Code(err) != bomb.want {
									return fmt.Errorf("call %d: got %v, want %v", i, err, bomb.want)
								}
								if s := status.Convert(err); bomb.want == codes.Aborted && len(s.Details()) != bomb.details && len(s.Message()) != bomb.message {
									return fmt.Errorf("call %d: %d details and a message of %d bytes, want %d details or a message of %d", i, len(s.Details()), len(s.Message()), bomb.details, bomb.message)
								}
							}
							return nil
						})
					})
					if err != nil {
						t.Error(err)
					}
					elapsed = time.Since(start)
				}, 20, v)[0]
				t.Logf("%d calls answered with %d KiB in %v: %.0f calls/s, %.1f MiB allocated per call (%.1f bytes per byte)",
					perBomb, len(bomb.wire)>>10, elapsed.Round(time.Millisecond), float64(perBomb)/elapsed.Seconds(),
					float64(allocated)/float64(perBomb)/(1<<20), float64(allocated)/float64(perBomb*len(bomb.wire)))
				u.check(t, "response bombs", 2*inFlight+48, int64(inFlight*headerBombFactor*limit)+16<<20)
				v.check(attacked)
				if per := allocated / uint64(perBomb); per > uint64(headerBombFactor*len(bomb.wire)) {
					t.Errorf("a call answered with %d KiB allocated %.1f MiB", len(bomb.wire)>>10, float64(per)/(1<<20))
				}
			})
		}
	})
}
