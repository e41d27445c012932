package rpc

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestOversizedMessages exceeds each message size limit: the server's
// receive and send limits, the client's send and receive limits, on unary
// and streaming calls. Each call fails with ResourceExhausted, and the
// session goes on.
func TestOversizedMessages(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		big := strings.Repeat("b", 4<<10)
		srv := NewServer(muxOpt(tr), MaxRecvMsgSize(1<<10), MaxSendMsgSize(1<<10))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.Value == "big reply" {
				return wrapperspb.String(big), nil
			}
			return defaultEcho.Unary(ctx, in)
		}})
		p := dial(t, serve(t, srv), muxOpt(tr), MaxSendMsgSize(16<<10))
		c := echoClient{p}

		t.Run("request over the server's limit", func(t *testing.T) {
			_, err := c.Unary(ctx, wrapperspb.String(big))
			wantStatus(t, err, codes.ResourceExhausted, "larger than max")
			checkEcho(t, ctx, p, "server")
		})
		t.Run("request over the client's send limit", func(t *testing.T) {
			_, err := c.Unary(ctx, wrapperspb.String(strings.Repeat("b", 32<<10)))
			wantStatus(t, err, codes.ResourceExhausted, "trying to send message larger than max")
			_, err = c.Unary(ctx, wrapperspb.String(big), MaxCallSendMsgSize(100))
			wantStatus(t, err, codes.ResourceExhausted, "trying to send message larger than max")
			checkEcho(t, ctx, p, "server")
		})
		t.Run("response over the server's send limit", func(t *testing.T) {
			_, err := c.Unary(ctx, wrapperspb.String("big reply"))
			wantStatus(t, err, codes.ResourceExhausted, "larger than max")
			checkEcho(t, ctx, p, "server")
		})
		t.Run("response over the client's receive limit", func(t *testing.T) {
			_, err := c.Unary(ctx, wrapperspb.String(strings.Repeat("r", 200)), MaxCallRecvMsgSize(100))
			wantStatus(t, err, codes.ResourceExhausted, "larger than max")
			checkEcho(t, ctx, p, "server")
		})
		t.Run("client-streaming request over the server's limit", func(t *testing.T) {
			s, err := c.ClientStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.Send(wrapperspb.String("small"))
			s.Send(wrapperspb.String(big)) // may fail once the server gave up
			_, err = s.CloseAndRecv()
			wantStatus(t, err, codes.ResourceExhausted, "larger than max")
			checkEcho(t, ctx, p, "server")
		})
		t.Run("bidi request over the server's limit", func(t *testing.T) {
			s, err := c.Bidi(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.Send(wrapperspb.String(big))
			_, err = s.Recv()
			wantStatus(t, err, codes.ResourceExhausted, "larger than max")
			checkEcho(t, ctx, p, "server")
		})
		t.Run("request larger than the stream window", func(t *testing.T) {
			// 1 MiB does not fit the 256 KiB window: the server answers
			// before the caller has finished writing, and closes the stream;
			// the caller's Write fails then, and it reads the answer.
			ctx := testCtx(t, 3*time.Second)
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := c.Unary(callCtx, wrapperspb.String(strings.Repeat("w", 1<<20)), MaxCallSendMsgSize(2<<20))
			wantStatus(t, err, codes.ResourceExhausted, "larger than max")
			checkEcho(t, ctx, p, "server")
		})
	})
}

// rawCall writes wire, the caller's side of a call assembled by hand, on a
// new call stream of p's session; with end it then ends the caller's
// direction. It returns the trailer the callee answered with.
func rawCall(ctx context.Context, p *Peer, wire []byte, end bool) (trailer, error) {
	st, err := p.Session().OpenType(ctx, StreamType)
	if err != nil {
		return trailer{}, err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	// A callee that answers before it has read the whole call (a call
	// header over a limit, say) ends the stream with its trailer and then
	// resets the rest of the call: the write fails, and the answer is
	// still there to read, as Invoke reads it.
	var werr error
	if len(wire) > 0 {
		_, werr = st.Write(wire)
	}
	if end && werr == nil {
		werr = st.CloseWrite()
	}
	r := partReader{st: st, maxMsg: 1 << 20}
	defer r.release()
	for {
		kind, payload, err := r.next()
		if err != nil {
			return trailer{}, errors.Join(werr, fmt.Errorf("reading the answer: %w", err))
		}
		switch kind {
		case partResponseHeader, partMessage:
		case partTrailer:
			return parseTrailer(payload)
		default:
			return trailer{}, fmt.Errorf("the callee sent a part of kind %d", kind)
		}
	}
}

// rawParts concatenates parts.
func rawParts(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// part makes a part of kind with payload.
func part(kind byte, payload ...byte) []byte {
	b, start := beginPart(nil, kind)
	return endPart(append(b, payload...), start)
}

// TestGarbageParts sends calls broken in every way the wire allows: parts
// out of order, truncated, with absurd length prefixes, undecodable
// headers and requests. Each gets a trailer with a clear status, the
// server allocates nothing near the sizes claimed, its handler finishes,
// and the session goes on serving.
func TestGarbageParts(t *testing.T) {
	hdr := appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, "")
	hdrSS := appendCallHeader(nil, "/test.Echo/ServerStream", 0, 0, nil, "")
	msg, _ := appendMessage(nil, wrapperspb.String("x"), 1<<20)
	end := appendEmptyPart(nil, partClientEnd)
	notProto := []byte{0xff, 0xff, 0xff, 0xff}
	huge := []byte{0xff, 0xff, 0xff, 0xff} // a length prefix of 4 GiB - 1

	cases := []struct {
		name string
		wire []byte
		// needsEnd: the callee can only tell once the caller's direction
		// ends (the smux transport cannot half-close; there the test
		// closes the stream and checks that the handler finished).
		needsEnd bool
		code     codes.Code
		msg      string
	}{
		{"message before the call header", rawParts(msg, end), false, codes.InvalidArgument, "call header"},
		{"part of an unknown kind first", rawParts(part(9, 1, 2, 3), msg, end), false, codes.InvalidArgument, "call header"},
		{"nothing at all", nil, true, codes.InvalidArgument, "call header"},
		{"truncated part prefix", []byte{partCallHeader, 0, 0}, true, codes.InvalidArgument, "inside a part prefix"},
		{"truncated call header", hdr[:len(hdr)-4], true, codes.InvalidArgument, "inside a part"},
		{"call header of 4 GiB", rawParts([]byte{partCallHeader}, huge, []byte("junk")), false, codes.ResourceExhausted, "larger than max"},
		{"call header not protobuf", rawParts(part(partCallHeader, notProto...), msg, end), false, codes.InvalidArgument, "malformed"},
		{"call header without a method", rawParts(part(partCallHeader), msg, end), false, codes.InvalidArgument, "without a method"},
		{"request not protobuf", rawParts(hdr, part(partMessage, notProto...), end), false, codes.Internal, "malformed request for /test.Echo/Unary"},
		{"server-streaming request not protobuf", rawParts(hdrSS, part(partMessage, notProto...), end), false, codes.Internal, "malformed request for /test.Echo/ServerStream"},
		{"request of 4 GiB", rawParts(hdr, []byte{partMessage}, huge, []byte("junk")), false, codes.ResourceExhausted, "larger than max"},
		{"truncated request", rawParts(hdr, msg[:len(msg)-1]), true, codes.InvalidArgument, "inside a part"},
		{"two requests on a unary call", rawParts(hdr, msg, msg, end), false, codes.InvalidArgument, "more than one request"},
		{"unary request without its end part", rawParts(hdr, msg), true, codes.InvalidArgument, "end part"},
		{"end part without a request", rawParts(hdr, end), false, codes.InvalidArgument, "without a request"},
		{"server-streaming end part without a request", rawParts(hdrSS, end), false, codes.InvalidArgument, "without a request"},
		{"a trailer from the caller", rawParts(hdr, part(partTrailer), end), false, codes.InvalidArgument, "without a request"},
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		p := dial(t, serve(t, srv), muxOpt(tr))
		sp := onlyPeer(t, srv)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var tl trailer
				var err error
				allocated := allocatedDuring(func() {
					if tc.needsEnd && tr == mux.Smux {
						err = rawCallClosed(ctx, p, tc.wire)
						return
					}
					tl, err = rawCall(ctx, p, tc.wire, tc.needsEnd)
				})
				if err != nil {
					t.Fatal(err)
				}
				if !(tc.needsEnd && tr == mux.Smux) {
					wantStatus(t, tl.err(), tc.code, tc.msg)
				}
				if allocated > 16<<20 {
					t.Errorf("the call allocated %d MiB", allocated>>20)
				}
				eventually(t, 5*time.Second, "the server's handler to finish", func() bool { return sp.Session().NumStreams() == 0 })
				checkEcho(t, ctx, p, "server")
			})
		}
	})
}

// rawCallClosed writes wire on a new call stream and closes the stream.
func rawCallClosed(ctx context.Context, p *Peer, wire []byte) error {
	st, err := p.Session().OpenType(ctx, StreamType)
	if err != nil {
		return err
	}
	if len(wire) > 0 {
		if _, err := st.Write(wire); err != nil {
			st.Close()
			return err
		}
	}
	return st.Close()
}

// allocatedDuring returns how many bytes the process allocated while f
// ran.
func allocatedDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestMalformedRequest sends, through the normal client, requests that are
// not valid encodings of the method's input type, by unary and streaming
// calls in both directions: Internal naming the method, as in gRPC.
func TestMalformedRequest(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
		p := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		// BytesValue's field 1 is StringValue's field 1, but bytes need not
		// be UTF-8: StringValue rejects them.
		bad := wrapperspb.Bytes([]byte{0xff, 0xfe, 0xfd})
		for _, cc := range []struct {
			name string
			cc   *Peer
			who  string
		}{{"clientToServer", p, "server"}, {"serverToClient", onlyPeer(t, srv), "client"}} {
			t.Run(cc.name, func(t *testing.T) {
				err := cc.cc.Invoke(ctx, "/test.Echo/Unary", bad, new(wrapperspb.StringValue))
				wantStatus(t, err, codes.Internal, "malformed request for /test.Echo/Unary")
				s, err := cc.cc.NewStream(ctx, &echoDesc.Streams[2], "/test.Echo/Bidi")
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SendMsg(bad); err != nil {
					t.Fatal(err)
				}
				err = s.RecvMsg(new(wrapperspb.StringValue))
				wantStatus(t, err, codes.Internal, "malformed request for /test.Echo/Bidi")
				checkEcho(t, ctx, cc.cc, cc.who)
			})
		}
	})
}
