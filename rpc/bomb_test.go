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
// and its bound of 4096 metadata entries let through, and past them; sent
// by a caller to a Server, and by a hostile callee to its caller. What a
// receiver spends on a part is bounded by the part's size, but not by it
// alone: each metadata entry costs a map entry, a slice and a string. The
// bound on entries caps that: before it, a megabyte of tiny entries
// (~100 000 of them) cost ~18 bytes allocated per byte of the part; now
// such a part is refused at its 4097th entry, and the costliest part a
// receiver accepts, 4096 entries filling the size, costs ~6. The tests
// bound that worst case per call in flight.
//
// Two bombs are in flight at a time, no more than the machine's cores:
// decoding a megabyte of metadata is work for a core under -race, and
// with more of them than cores the victim waits for the scheduler and
// the collector, not for this code (8 in flight took its p90 to ~100 ms
// under -race, 200 times the undisturbed figure, though its p50 stayed
// put).

// headerBombFactor bounds the heap a call in flight may use per byte of
// its header or trailer: the part's buffer, the metadata decoded from it,
// and the garbage of decoding it. Measured on 1 MiB parts: 4-6 bytes
// allocated per byte, for every bomb the receiver accepts or refuses.
const headerBombFactor = 12

// appendBombEntries appends metadata entries of field until the part
// begun at start holds size bytes of payload, give or take an entry, or
// holds n entries: distinct keys with empty values, or one key repeated.
func appendBombEntries(b []byte, start int, field protowire.Number, size, n int, distinct bool) []byte {
	for i := 0; i < n && len(b)-start-partPrefixLen < size-16; i++ {
		k := "k"
		if distinct {
			k = fmt.Sprintf("%x", i)
		}
		b = appendEntries(b, field, k, "")
	}
	return b
}

// appendFullEntries appends n entries of field, of distinct keys, whose
// values fill the part begun at start to about size bytes. With n =
// maxMetadataEntries that is the most entries a part may hold, and the
// costliest part of them a receiver accepts.
func appendFullEntries(b []byte, start int, field protowire.Number, size, n int) []byte {
	value := strings.Repeat("v", size/n-16) // 16: the key, tags and lengths
	for i := range n {
		b = appendEntries(b, field, fmt.Sprintf("%x", i), value)
	}
	if len(b)-start-partPrefixLen > size {
		panic("appendFullEntries: the entries overflow the size")
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
	rest := unaryWire("/test.Echo/Unary", "bombed")[len(appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, "")):]
	call := func(b []byte, start int) []byte { return append(endPart(b, start), rest...) }

	b, start := begin()
	huge := call(appendEntries(b, fieldCallMetadata, "big", strings.Repeat("v", limit-64)), start)
	b, start = begin()
	full := call(appendFullEntries(b, start, fieldCallMetadata, limit, maxMetadataEntries), start)
	b, start = begin()
	distinct := call(appendBombEntries(b, start, fieldCallMetadata, limit, limit, true), start)
	b, start = begin()
	same := call(appendBombEntries(b, start, fieldCallMetadata, limit, limit, false), start)
	b, start = begin()
	over := call(appendBombEntries(b, start, fieldCallMetadata, limit+64, limit, true), start)
	b, start = begin()
	b = appendFullEntries(b, start, fieldCallMetadata, limit-64, maxMetadataEntries-1)
	invalid := call(appendEntries(b, fieldCallMetadata, "Not A Key", ""), start)
	return []headerBomb{
		{"one value of the whole size", codes.OK, huge},
		{"the most entries, filling the size", codes.OK, full},
		{"distinct keys, tiny entries past the entry limit", codes.ResourceExhausted, distinct},
		{"one key, values past the entry limit", codes.ResourceExhausted, same},
		{"tiny entries past the size limit", codes.ResourceExhausted, over},
		{"the most entries, the last one invalid", codes.InvalidArgument, invalid},
	}
}

// TestCallHeaderBombsCostBoundedAndDelayNoHonestPeer sends a Server, on
// each transport, calls whose call header fills its MaxHeaderListSize of
// 1 MiB in the costliest ways (one huge value; 4096 entries filling it),
// or overflows it, or holds more than 4096 entries (~100 000 tiny ones,
// of distinct keys or of one key), or ends in an invalid entry, 2 at a
// time (MaxConcurrentCalls): each is served (OK), or
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
	header := rawParts(endPart(appendFullEntries(b, start, fieldHeaderMetadata, limit, maxMetadataEntries), start), msg, okTrailer)

	b, start = beginPart(nil, partResponseHeader)
	headerTiny := rawParts(endPart(appendBombEntries(b, start, fieldHeaderMetadata, limit, limit, true), start), msg, okTrailer)

	b, start = beginPart(nil, partTrailer)
	trailerMD := rawParts(msg, endPart(appendFullEntries(b, start, fieldTrailerMetadata, limit, maxMetadataEntries), start))

	b, start = beginPart(nil, partTrailer)
	trailerTiny := rawParts(msg, endPart(appendBombEntries(b, start, fieldTrailerMetadata, limit, limit, true), start))

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
	over := rawParts(msg, endPart(appendBombEntries(b, start, fieldTrailerMetadata, limit+64, limit, true), start))

	return []responseBomb{
		{"response header of the most entries, filling the size", codes.OK, header, 0, 0},
		{"response header of tiny entries past the entry limit", codes.ResourceExhausted, headerTiny, 0, 0},
		{"trailer metadata of the most entries, filling the size", codes.OK, trailerMD, 0, 0},
		{"trailer metadata of tiny entries past the entry limit", codes.ResourceExhausted, trailerTiny, 0, 0},
		{"64 status details of the whole size", codes.Aborted, details, maxStatusDetails, 0},
		{"status message of the whole size", codes.Aborted, message, 0, limit - 64},
		{"trailer of tiny entries past the limit", codes.ResourceExhausted, over, 0, 0},
	}
}

// TestResponseBombsCostTheCallerBounded has a hostile callee answer, on
// each transport, every call with a response header or trailer that
// fills the caller's MaxHeaderListSize of 1 MiB in the costliest ways
// (4096 metadata entries, 64 status details, one huge status message),
// or overflows it, or holds ~100 000 tiny entries, to 2 calls at a time: each call gets the callee's status
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
