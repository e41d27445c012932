package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"google.golang.org/grpc/encoding"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The limits of the fuzzed callee: small, so that parts over them and
// parts under them that the stream cuts short are both in reach.
const (
	fuzzCalleeMaxMsg    = 1 << 10
	fuzzCalleeMaxHeader = 1 << 10
)

// fuzzEcho is test.Echo as echoImpl serves it, save that no request makes
// a handler wait for its context: every call the fuzzer makes ends by
// itself.
var fuzzEcho = &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if strings.HasPrefix(in.Value, "wait") {
		return wrapperspb.String("server:" + in.Value), nil
	}
	return defaultEcho.Unary(ctx, in)
}}

// calleeVerdict is what a callee serving test.Echo answers a call, by
// PROTOCOL.md: the status code and, for OK, the responses.
type calleeVerdict struct {
	code    codes.Code
	replies []string
	timeout time.Duration // the call header's, if it had one
}

// specCallee says what a callee serving fuzzEcho, with the limits of the
// fuzzed one, answers the caller's bytes wire, followed by the end of
// the caller's direction (PROTOCOL.md, sections 13 and 15): the first
// part must be a valid CALL_HEADER (INVALID_ARGUMENT otherwise), naming
// a method served (UNIMPLEMENTED otherwise); then each method reads its
// requests as its kind allows, a part over a limit being
// RESOURCE_EXHAUSTED, a part out of place or the stream's end before
// CLIENT_END INVALID_ARGUMENT, a request that is not a StringValue
// INTERNAL; and the handlers answer as echoImpl does.
func specCallee(wire []byte) calleeVerdict {
	parts, end, _, _ := specSplit(wire, fuzzCalleeMaxMsg, fuzzCalleeMaxHeader)
	// cut is the status of a call whose next part could not be read.
	cut := func() calleeVerdict {
		if end == endTooLarge {
			return calleeVerdict{code: codes.ResourceExhausted}
		}
		return calleeVerdict{code: codes.InvalidArgument}
	}
	if len(parts) == 0 {
		return cut()
	}
	if parts[0].kind != partCallHeader {
		return calleeVerdict{code: codes.InvalidArgument}
	}
	h, err := parseCallHeader(parts[0].payload)
	if err != nil {
		return calleeVerdict{code: codes.InvalidArgument}
	}
	v := func(code codes.Code, replies ...string) calleeVerdict {
		return calleeVerdict{code: code, replies: replies, timeout: h.timeout}
	}
	// The caller's compressor: a callee without it answers UNIMPLEMENTED
	// before reading on (section 13).
	var comp encoding.Compressor
	if name := string(h.compression); name != "" && name != "identity" {
		if comp = encoding.GetCompressor(name); comp == nil {
			return v(codes.Unimplemented)
		}
	}
	requests := parts[1:]
	// request returns the request at i, or the status of a call whose
	// request it cannot be.
	request := func(i int) (string, *calleeVerdict) {
		if i == len(requests) {
			c := cut()
			c.timeout = h.timeout
			return "", &c
		}
		payload := requests[i].payload
		switch requests[i].kind {
		case partMessage:
		case partMessage | partCompressed:
			var code codes.Code
			if payload, code = specInflate(comp, payload, fuzzCalleeMaxMsg); code != codes.OK {
				c := v(code)
				return "", &c
			}
		default:
			c := v(codes.InvalidArgument)
			return "", &c
		}
		in := new(wrapperspb.StringValue)
		if decodeMessage(payload, in) != nil {
			c := v(codes.Internal)
			return "", &c
		}
		return in.Value, nil
	}
	// endPart returns the status of a call whose part at i is not its end
	// part, or nil.
	endPart := func(i int) *calleeVerdict {
		switch {
		case i == len(requests):
			c := cut()
			c.timeout = h.timeout
			return &c
		case requests[i].kind == partMessage|partCompressed:
			// Read, so decompressed, before it is found out of place.
			code := codes.InvalidArgument
			if _, inflated := specInflate(comp, requests[i].payload, fuzzCalleeMaxMsg); inflated != codes.OK {
				code = inflated
			}
			c := v(code)
			return &c
		case requests[i].kind != partClientEnd:
			c := v(codes.InvalidArgument)
			return &c
		}
		return nil
	}
	switch string(h.method) {
	case "/test.Echo/Unary":
		// The end part is read before the request is decoded, and after
		// it is decompressed.
		if len(requests) > 0 && requests[0].kind == partMessage|partCompressed {
			if _, code := specInflate(comp, requests[0].payload, fuzzCalleeMaxMsg); code != codes.OK {
				return v(code)
			}
		}
		if len(requests) > 0 && isMessage(requests[0].kind) {
			if bad := endPart(1); bad != nil {
				return *bad
			}
		}
		in, bad := request(0)
		switch {
		case bad != nil:
			return *bad
		case in == "panic":
			return v(codes.Internal)
		case in == "fail":
			return v(codes.FailedPrecondition)
		}
		return v(codes.OK, "server:"+in)
	case "/test.Echo/ServerStream":
		// The request is decoded before the end part is read.
		in, bad := request(0)
		if bad == nil {
			bad = endPart(1)
		}
		if bad != nil {
			return *bad
		}
		return v(codes.OK, "server:"+in, "server:"+in, "server:"+in)
	case "/test.Echo/ClientStream", "/test.Echo/Bidi":
		var got []string
		for i := 0; ; i++ {
			if i < len(requests) && requests[i].kind == partClientEnd {
				break
			}
			in, bad := request(i)
			if bad != nil {
				return *bad
			}
			got = append(got, "server:"+in)
		}
		if string(h.method) == "/test.Echo/Bidi" {
			return v(codes.OK, got...)
		}
		all := make([]string, len(got))
		for i, s := range got {
			all[i] = strings.TrimPrefix(s, "server:")
		}
		return v(codes.OK, "server:"+strings.Join(all, ","))
	}
	return v(codes.Unimplemented)
}

// isMessage reports whether a part's kind is MESSAGE's, compressed or not.
func isMessage(kind byte) bool { return kind&^partCompressed == partMessage }

// specInflate decompresses a compressed MESSAGE's payload p with comp, as
// section 13 says a receiver whose maximum message size is maxMsg does:
// the message, or INTERNAL for a direction without a compressor or a
// payload that does not decompress, RESOURCE_EXHAUSTED for one that
// inflates past maxMsg.
func specInflate(comp encoding.Compressor, p []byte, maxMsg int) ([]byte, codes.Code) {
	if comp == nil {
		return nil, codes.Internal
	}
	zr, err := comp.Decompress(bytes.NewReader(p))
	if err != nil {
		return nil, codes.Internal
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(maxMsg)+1))
	switch {
	case len(out) > maxMsg:
		return nil, codes.ResourceExhausted
	case err != nil:
		return nil, codes.Internal
	}
	return out, codes.OK
}

// slowDeadline is the timeout below which a fuzzed call may end with
// DEADLINE_EXCEEDED whatever else it should end with: its deadline may
// pass while the call is served.
const slowDeadline = 10 * time.Second

// handlersIdle waits until p runs no handler, for at most d, and reports
// whether it got there.
func handlersIdle(p *Peer, d time.Duration) bool {
	deadline := time.Now().Add(d)
	wake := time.AfterFunc(d, p.wake)
	defer wake.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.active > 0 {
		if time.Now().After(deadline) {
			return false
		}
		p.idle.Wait()
	}
	return true
}

// FuzzCallee sends arbitrary bytes as a call, on a stream of their own,
// to a real Server serving test.Echo, and ends the stream's direction.
// The callee answers with exactly the status PROTOCOL.md (sections 13
// and 15) gives the bytes, as specCallee derives it: InvalidArgument,
// Unimplemented, ResourceExhausted, Internal, or the handler's own,
// with, for OK, exactly the responses echoImpl makes; a call whose
// timeout is short may end with DeadlineExceeded instead, in a trailer
// or a reset with code 0x104. It sends a response header only to name
// its compressor, and its direction ends right after the trailer. It never panics or hangs: its
// handler returns, and the next call, a valid one, is answered.
func FuzzCallee(f *testing.F) {
	hdr := func(method string, timeout time.Duration, kv ...string) []byte {
		return appendCallHeader(nil, method, timeout, 0, metadata.Pairs(kv...), "")
	}
	req := func(s string) []byte {
		b, _ := appendMessage(nil, wrapperspb.String(s), 1<<20)
		return b
	}
	end := appendEmptyPart(nil, partClientEnd)
	gzip := encoding.GetCompressor("gzip")
	compressed := func(s string) []byte {
		o, _ := newOutMessage(wrapperspb.String(s))
		b, _ := o.appendPart(nil, 1<<20, gzip)
		return b
	}
	zhdr := func(method, compression string) []byte {
		return appendCallHeader(nil, method, 0, 0, nil, compression)
	}
	f.Add(rawParts(zhdr("/test.Echo/Unary", "gzip"), compressed("x"), end))
	f.Add(rawParts(zhdr("/test.Echo/Bidi", "gzip"), compressed("a"), req("b"), compressed(strings.Repeat("z", 10000)), end))
	f.Add(rawParts(zhdr("/test.Echo/Unary", "no-such"), compressed("x"), end))
	f.Add(rawParts(hdr("/test.Echo/Unary", 0), compressed("x"), end))
	f.Add(rawParts(zhdr("/test.Echo/Unary", "gzip"), part(partMessage|partCompressed, 1, 2, 3), end))
	f.Add(rawParts(zhdr("/test.Echo/Unary", "gzip"), compressed("x"), compressed("y"), end))
	f.Add(rawParts(hdr("/test.Echo/Unary", 0), req("x"), end))
	f.Add(rawParts(hdr("/test.Echo/Unary", time.Minute, "k", "v", "b-bin", "\x00"), req("fail"), end))
	f.Add(rawParts(hdr("/test.Echo/Unary", 0), req("panic"), end))
	f.Add(rawParts(hdr("/test.Echo/ServerStream", 0), req("s"), end))
	f.Add(rawParts(hdr("/test.Echo/ClientStream", 0), req("a"), req("b"), end))
	f.Add(rawParts(hdr("/test.Echo/Bidi", 0), req("a"), req("b"), req("c"), end))
	f.Add(rawParts(hdr("/test.Echo/Bidi", time.Microsecond), req("late"), end))
	f.Add(rawParts(hdr("/test.Echo/Nope", 0), req("x"), end))
	f.Add(rawParts(hdr("/test.Echo/Unary", 0), part(partMessage, 0xff, 0xff), end))
	f.Add(rawParts(hdr("/test.Echo/Unary", 0), []byte{partMessage, 0xff, 0xff, 0xff, 0xff}, []byte("junk")))
	f.Add(rawParts(callHeaderWith("/test.Echo/Unary", "Bad", "v"), req("x"), end))
	f.Add(rawParts(req("x"), end))
	f.Add([]byte{})
	ctx := testCtx(f, time.Hour)
	srv := NewServer(muxOpt(mux.Native), MaxRecvMsgSize(fuzzCalleeMaxMsg), MaxHeaderListSize(fuzzCalleeMaxHeader))
	srv.RegisterService(&echoDesc, fuzzEcho)
	p := dial(f, serve(f, srv), muxOpt(mux.Native))
	callee := onlyPeer(f, srv)
	f.Fuzz(func(t *testing.T, wire []byte) {
		want := specCallee(wire)
		callCtx, cancel := context.WithTimeout(ctx, 2*slowDeadline)
		defer cancel()
		st, err := p.Session().OpenType(callCtx, StreamType)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(2 * slowDeadline))
		st.WriteLast(wire) // may fail once the callee has answered without reading it all
		code, replies, err := readCalleeAnswer(st)
		late := want.timeout > 0 && want.timeout < slowDeadline
		var reset *mux.ResetError
		switch {
		case err != nil && late && errors.As(err, &reset) && reset.Code == resetDeadlineExceeded:
		case err != nil:
			t.Fatalf("% x: reading the answer: %v; want %v", wire, err, want.code)
		case code == codes.DeadlineExceeded && late:
		case code != want.code:
			t.Fatalf("% x: answered %v; PROTOCOL.md says %v", wire, code, want.code)
		case code == codes.OK && !slices.Equal(replies, want.replies):
			t.Fatalf("% x: answered %q; want %q", wire, replies, want.replies)
		}
		st.Close()
		checkEcho(t, callCtx, p, "server")
		if !handlersIdle(callee, 10*time.Second) {
			t.Fatalf("% x: the callee's handler did not return", wire)
		}
	})
}

// readCalleeAnswer reads a callee's answer on st: its responses, its
// trailer's code, and then the end of its direction.
func readCalleeAnswer(st *mux.Stream) (codes.Code, []string, error) {
	r := partReader{st: st, maxMsg: 1 << 20}
	defer r.release()
	var replies []string
	for {
		kind, payload, err := r.next()
		if err != nil {
			return 0, replies, err
		}
		switch kind {
		case partResponseHeader: // to name the callee's compressor
			_, compression, err := parseResponseHeader(payload)
			if err != nil {
				return 0, replies, err
			}
			if r.decomp, err = callerDecompressor(compression); err != nil {
				return 0, replies, err
			}
		case partMessage:
			out := new(wrapperspb.StringValue)
			if err := decodeMessage(payload, out); err != nil {
				return 0, replies, err
			}
			replies = append(replies, out.Value)
		case partTrailer:
			tl, err := parseTrailer(payload)
			if err != nil {
				return 0, replies, err
			}
			if _, _, err := r.next(); err != io.EOF {
				return 0, replies, errors.New("the callee's direction goes on after its trailer")
			}
			return status.Code(tl.err()), replies, nil
		default:
			return 0, replies, fmt.Errorf("the callee sent a part of kind %d", kind)
		}
	}
}
