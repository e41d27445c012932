package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// What a peer costs the other side must be bounded by what it sends, not
// by what it claims it will send.

// lyingPrefix is a MESSAGE prefix announcing 4 MiB, the default limit,
// and the only 20 bytes of its payload that ever come.
var lyingPrefix = rawParts([]byte{partMessage, 0x00, 0x40, 0x00, 0x00}, []byte("0123456789abcdefghij"))

// TestAnnouncedMessageSizeIsNotAllocatedUpFront has 50 calls each send a
// message prefix of 4 MiB and 20 bytes of the message, to a callee and,
// from a callee, to a caller. The receiver's memory grows with the bytes
// that came, not with the sizes announced (200 MiB in all), and each
// call still ends with a clear status: at its deadline, or when the
// stream ends inside the message.
func TestAnnouncedMessageSizeIsNotAllocatedUpFront(t *testing.T) {
	const calls = 50
	const bound = 32 << 20
	const deadline = 500 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		t.Run("callee", func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			srv := NewServer(muxOpt(tr))
			srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
			p := dial(t, serve(t, srv), muxOpt(tr))
			wire := rawParts(appendCallHeader(nil, "/test.Echo/Unary", deadline, 0, nil, ""), lyingPrefix)
			// On the native transport, half the calls end their stream
			// inside the message.
			endEarly := func(i int) bool { return tr == mux.Native && i%2 == 0 }
			var err error
			allocated := allocatedDuring(func() {
				streams := make([]*mux.Stream, calls)
				for i := range streams {
					streams[i] = openCall(t, ctx, p, wire, false)
					if endEarly(i) {
						streams[i].CloseWrite()
					}
				}
				err = concurrently(calls, func(i int) error {
					a, err := readAnswer(streams[i])
					switch {
					case err != nil:
						return fmt.Errorf("reading the answer: %w", err)
					case endEarly(i) && status.Code(a.status) != codes.InvalidArgument:
						return fmt.Errorf("a call whose stream ended inside its request: got %v, want InvalidArgument", a.status)
					case !endEarly(i) && status.Code(a.status) != codes.DeadlineExceeded:
						return fmt.Errorf("a call whose request never came: got %v, want DeadlineExceeded", a.status)
					}
					return nil
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			if allocated > bound {
				t.Errorf("the calls allocated %d MiB", allocated>>20)
			}
			checkEcho(t, ctx, p, "server")
		})
		t.Run("caller", func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			p := rawCallee(t, tr, func(st *mux.Stream) {
				st.Write(lyingPrefix)
				untilCallerGivesUp(st)
			})
			var err error
			allocated := allocatedDuring(func() {
				err = concurrently(calls, func(int) error {
					callCtx, cancel := context.WithTimeout(ctx, deadline)
					defer cancel()
					_, err := echoClient{p}.Unary(callCtx, wrapperspb.String("x"))
					if status.Code(err) != codes.DeadlineExceeded {
						return fmt.Errorf("got %v, want DeadlineExceeded", err)
					}
					return nil
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			if allocated > bound {
				t.Errorf("the calls allocated %d MiB", allocated>>20)
			}
		})
	})
}

// concurrently runs f(0), ..., f(n-1), each on a goroutine of its own,
// and returns their errors joined.
func concurrently(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// TestTrailerOfManyDetailsCostsLittle answers a call with a trailer of
// 1 MiB holding half a million empty status details: the caller keeps a
// bounded number of them, allocates a small multiple of the trailer's
// size, and still reports the status's code and message.
func TestTrailerOfManyDetailsCostsLittle(t *testing.T) {
	b, start := beginPart(nil, partTrailer)
	b = protowire.AppendTag(b, fieldTrailerCode, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(codes.Aborted))
	b = protowire.AppendTag(b, fieldTrailerMessage, protowire.BytesType)
	b = protowire.AppendString(b, "many details")
	for len(b)-start < defaultMaxHeaderListSize-2 {
		b = protowire.AppendTag(b, fieldTrailerDetails, protowire.BytesType)
		b = protowire.AppendBytes(b, nil)
	}
	manyDetails := endPart(b, start)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		p := rawCallee(t, tr, func(st *mux.Stream) {
			st.WriteLast(manyDetails)
			io.Copy(io.Discard, st)
		})
		var err error
		allocated := allocatedDuring(func() {
			_, err = echoClient{p}.Unary(ctx, wrapperspb.String("x"))
		})
		wantStatus(t, err, codes.Aborted, "many details")
		if n := len(status.Convert(err).Details()); n > maxStatusDetails {
			t.Errorf("the status kept %d details", n)
		}
		if allocated > 8<<20 {
			t.Errorf("a trailer of 1 MiB cost the caller %d MiB", allocated>>20)
		}
	})
}
