package rpc

import (
	"context"
	"errors"
	"google.golang.org/grpc/encoding"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// callerVerdict is how a call ends for its caller, by PROTOCOL.md: its
// status, its responses when OK, and the metadata it received.
type callerVerdict struct {
	err     error // nil for OK; for a status a trailer carried, that status
	code    codes.Code
	replies []string
	header  metadata.MD // nil: no response header arrived
	trailer metadata.MD
}

// specCaller says how a call ends whose callee answers with the bytes
// answer and then ends the stream, for a caller whose limit of response
// messages is maxRecv (PROTOCOL.md, sections 13, 15 and 17). The parts
// must come in order: at most one RESPONSE_HEADER, before any MESSAGE;
// MESSAGEs, exactly one for a call that returns one (serverStreams
// false); then TRAILER, whose status ends the call. A part out of place
// or of another kind, a malformed part, a response that is not a
// StringValue, or an OK trailer without the response a call returns is
// INTERNAL; a part over a limit RESOURCE_EXHAUSTED; the stream's end
// before TRAILER UNAVAILABLE.
func specCaller(answer []byte, maxRecv int, serverStreams bool) callerVerdict {
	parts, end, _, _ := specSplit(answer, maxRecv, defaultMaxHeaderListSize)
	var v callerVerdict
	fail := func(code codes.Code) callerVerdict {
		v.code = code
		return v
	}
	var comp encoding.Compressor // the callee's, from its response header
	for _, p := range parts {
		switch p.kind {
		case partResponseHeader:
			if v.header != nil || len(v.replies) > 0 {
				return fail(codes.Internal)
			}
			md, compression, err := parseResponseHeader(p.payload)
			if err != nil {
				return fail(codes.Internal)
			}
			v.header = md
			if compression != "" && compression != "identity" {
				if comp = encoding.GetCompressor(compression); comp == nil {
					return fail(codes.Internal)
				}
			}
		case partMessage, partMessage | partCompressed:
			payload := p.payload
			if p.kind == partMessage|partCompressed { // read, so decompressed, before it is found out of place
				var code codes.Code
				if payload, code = specInflate(comp, payload, maxRecv); code != codes.OK {
					return fail(code)
				}
			}
			if !serverStreams && len(v.replies) == 1 {
				return fail(codes.Internal)
			}
			out := new(wrapperspb.StringValue)
			if decodeMessage(payload, out) != nil {
				return fail(codes.Internal)
			}
			v.replies = append(v.replies, out.Value)
		case partTrailer:
			tl, err := parseTrailer(p.payload)
			if err != nil {
				return fail(codes.Internal)
			}
			v.trailer = tl.md
			if tl.code != codes.OK {
				v.err = tl.err()
				return fail(tl.code)
			}
			if !serverStreams && len(v.replies) == 0 {
				return fail(codes.Internal)
			}
			return fail(codes.OK)
		default:
			return fail(codes.Internal)
		}
	}
	switch end {
	case endClean:
		return fail(codes.Unavailable)
	case endTooLarge:
		return fail(codes.ResourceExhausted)
	}
	return fail(codes.Internal)
}

// answerWithRequest is a raw callee's answer to a call: it reads the
// call's parts up to its end part and writes back, as the whole answer,
// the bytes of its first request, a BytesValue.
func answerWithRequest(st *mux.Stream) {
	st.SetDeadline(time.Now().Add(20 * time.Second))
	r := partReader{st: st, maxMsg: 1 << 20}
	defer r.release()
	var answer []byte
	for got := false; ; {
		kind, payload, err := r.next()
		if err != nil {
			return
		}
		if kind == partClientEnd {
			break
		}
		if kind == partMessage && !got {
			in := new(wrapperspb.BytesValue)
			if decodeMessage(payload, in) != nil {
				return
			}
			answer, got = in.Value, true
		}
	}
	st.WriteLast(answer)
}

// The call kinds FuzzCaller makes, by the fuzzer's choice.
var callerKinds = []struct {
	name string
	desc *StreamDesc // nil: Invoke
}{
	{"unary", nil},
	{"server-streaming", &StreamDesc{ServerStreams: true}},
	{"client-streaming", &StreamDesc{ClientStreams: true}},
}

// FuzzCaller has a raw callee answer a real caller's call with
// arbitrary bytes, then end the stream; the call is unary,
// server-streaming or client-streaming, with a response limit, as the
// input says. The call ends exactly as PROTOCOL.md (sections 13, 15
// and 17) has it, as specCaller derives it: with the status the trailer
// carries, code, message and details, or Internal, ResourceExhausted or
// Unavailable; when OK with exactly the responses sent. The Header and
// Trailer call options get the metadata that arrived, nil for none.
// The call neither panics nor hangs, and is counted in flight no more.
func FuzzCaller(f *testing.F) {
	msg := func(s string) []byte {
		b, _ := appendMessage(nil, wrapperspb.String(s), 1<<20)
		return b
	}
	ok := appendTrailer(nil, &trailer{})
	f.Add(rawParts(msg("ok"), ok), uint8(0), uint16(1<<10))
	f.Add(rawParts(appendResponseHeader(nil, metadata.Pairs("h", "1"), ""), msg("a"), msg("b"), appendTrailer(nil, &trailer{md: metadata.Pairs("t-bin", "\x00")})), uint8(1), uint16(1<<10))
	f.Add(rawParts(msg("one"), ok), uint8(2), uint16(1<<10))
	f.Add(appendTrailer(nil, &trailer{code: codes.NotFound, message: "no", details: [][]byte{anyDetail(f, wrapperspb.String("d"))}}), uint8(0), uint16(0))
	f.Add(rawParts(msg("a"), msg("b"), ok), uint8(0), uint16(1<<10))
	f.Add(rawParts(msg("a"), appendResponseHeader(nil, metadata.Pairs("h", "1"), ""), ok), uint8(1), uint16(1<<10))
	f.Add(rawParts(msg("big"), ok), uint8(0), uint16(3))
	f.Add(rawParts(msg("x"), appendEmptyPart(nil, partClientEnd)), uint8(1), uint16(1<<10))
	f.Add(rawParts(msg("cut"))[:4], uint8(0), uint16(1<<10))
	f.Add([]byte{}, uint8(2), uint16(1<<10))
	badHeader := part(partResponseHeader, appendEntries(nil, fieldHeaderMetadata, "a", "1", "B", "2")...)
	f.Add(rawParts(badHeader, msg("x"), ok), uint8(0), uint16(1<<10))
	f.Add(rawParts(badHeader, msg("x"), ok), uint8(1), uint16(1<<10))
	p := rawCallee(f, mux.Native, answerWithRequest)
	f.Fuzz(func(t *testing.T, answer []byte, kind uint8, maxRecv uint16) {
		ck := callerKinds[int(kind)%len(callerKinds)]
		want := specCaller(answer, int(maxRecv), ck.desc != nil && ck.desc.ServerStreams)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var header, trailer metadata.MD
		opts := []CallOption{Header(&header), Trailer(&trailer), MaxCallRecvMsgSize(int(maxRecv))}
		replies, err := fuzzCall(ctx, p, ck.desc, wrapperspb.Bytes(answer), opts)
		if ctx.Err() != nil {
			t.Fatalf("% x, %s call: did not end in time (%v)", answer, ck.name, err)
		}
		s, isStatus := status.FromError(err)
		switch {
		case !isStatus:
			t.Fatalf("% x, %s call: error %v (%T) carries no status", answer, ck.name, err, err)
		case s.Code() != want.code:
			t.Fatalf("% x, %s call: ended with %v; PROTOCOL.md says %v", answer, ck.name, err, want.code)
		case want.err != nil && !equalStatus(s, status.Convert(want.err)):
			t.Fatalf("% x, %s call: ended with %v; the trailer says %v", answer, ck.name, s.Proto(), status.Convert(want.err).Proto())
		case want.code == codes.OK && !slices.Equal(replies, want.replies):
			t.Fatalf("% x, %s call: got responses %q, want %q", answer, ck.name, replies, want.replies)
		case (header == nil) != (want.header == nil) || !sameMD(header, want.header):
			t.Fatalf("% x, %s call: got header %v, want %v", answer, ck.name, map[string][]string(header), map[string][]string(want.header))
		case !sameMD(trailer, want.trailer):
			t.Fatalf("% x, %s call: got trailer %v, want %v", answer, ck.name, map[string][]string(trailer), map[string][]string(want.trailer))
		}
		if n := p.outgoing.Load(); n != 0 {
			t.Fatalf("% x, %s call: %d calls still counted in flight", answer, ck.name, n)
		}
	})
}

// equalStatus reports whether a and b have the same code, message and
// details.
func equalStatus(a, b *status.Status) bool {
	return a.Code() == b.Code() && a.Message() == b.Message() &&
		slices.EqualFunc(a.Proto().GetDetails(), b.Proto().GetDetails(), func(x, y *anypb.Any) bool { return proto.Equal(x, y) })
}

// fuzzCall makes a call of "/fuzz.Raw/Answer" through p with the request
// req, as Invoke when desc is nil, else as a stream of desc, reading
// responses until the call ends. It returns the responses and the
// call's error, nil for OK.
func fuzzCall(ctx context.Context, p *Peer, desc *StreamDesc, req *wrapperspb.BytesValue, opts []CallOption) ([]string, error) {
	const method = "/fuzz.Raw/Answer"
	if desc == nil {
		out := new(wrapperspb.StringValue)
		if err := p.Invoke(ctx, method, req, out, opts...); err != nil {
			return nil, err
		}
		return []string{out.Value}, nil
	}
	s, err := p.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	s.CloseSend()
	var replies []string
	for {
		out := new(wrapperspb.StringValue)
		err := s.RecvMsg(out)
		switch {
		case errors.Is(err, io.EOF):
			return replies, nil
		case err != nil:
			return replies, err
		}
		replies = append(replies, out.Value)
		if !desc.ServerStreams {
			return replies, nil
		}
	}
}
