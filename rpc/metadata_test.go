package rpc

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// incomingMD answers with the call's incoming metadata, sorted k="v"
// pairs (values quoted) joined by ",", and with ok=false when
// FromIncomingContext found none. It then changes what it got, which must not reach other calls.
func incomingMD(ctx context.Context) *wrapperspb.StringValue {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return wrapperspb.String("ok=false")
	}
	var pairs []string
	for k, vs := range md {
		for _, v := range vs {
			pairs = append(pairs, k+"="+strconv.Quote(v))
		}
	}
	md.Set("changed-by-handler", "x")
	slices.Sort(pairs)
	return wrapperspb.String(strings.Join(pairs, ","))
}

// TestIncomingMetadataPresentWithoutAny makes unary and streaming calls
// that carry no metadata: the handler finds incoming metadata all the
// same, empty, as gRPC guarantees, and what one handler does to it does
// not reach the next call.
func TestIncomingMetadataPresentWithoutAny(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{
			unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				return incomingMD(ctx), nil
			},
			serverStream: func(_ *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				return s.Send(incomingMD(s.Context()))
			},
		})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		for i := range 2 {
			out, err := c.Unary(ctx, wrapperspb.String("x"))
			if err != nil || out.Value != "" {
				t.Fatalf("unary call %d: got %v, %v; want empty incoming metadata", i, out, err)
			}
			s, err := c.ServerStream(ctx, wrapperspb.String("x"))
			if err != nil {
				t.Fatal(err)
			}
			if out, err := s.Recv(); err != nil || out.Value != "" {
				t.Fatalf("streaming call %d: got %v, %v; want empty incoming metadata", i, out, err)
			}
		}
	})
}

// TestInvalidOutgoingMetadataFailsBeforeSending makes calls whose
// outgoing metadata breaks gRPC's rules: each fails with Internal, as in
// gRPC-Go, and the callee never sees it. A "-bin" key takes any bytes.
func TestInvalidOutgoingMetadataFailsBeforeSending(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		var served atomic.Int64
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{
			unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				served.Add(1)
				return incomingMD(ctx), nil
			},
			serverStream: func(_ *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				served.Add(1)
				return s.Send(incomingMD(s.Context()))
			},
		})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		for _, tc := range []struct {
			name string
			md   metadata.MD
			want string
		}{
			{"key with a space", metadata.MD{"bad key": {"v"}}, "illegal characters"},
			{"key with a slash", metadata.MD{"a/b": {"v"}}, "illegal characters"},
			{"value with NUL", metadata.MD{"k": {"a\x00b"}}, "not printable"},
			{"value with a newline", metadata.MD{"k": {"a\nb"}}, "not printable"},
			{"value not ASCII", metadata.MD{"k": {"caf\u00e9"}}, "not printable"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				callCtx := metadata.NewOutgoingContext(ctx, tc.md)
				_, err := c.Unary(callCtx, wrapperspb.String("x"))
				wantStatus(t, err, codes.Internal, tc.want)
				_, err = c.ServerStream(callCtx, wrapperspb.String("x"))
				wantStatus(t, err, codes.Internal, tc.want)
			})
		}
		if n := served.Load(); n != 0 {
			t.Fatalf("the server served %d calls with invalid metadata", n)
		}
		binCtx := metadata.NewOutgoingContext(ctx, metadata.MD{"k-bin": {"\x00\xff\n"}})
		out, err := c.Unary(binCtx, wrapperspb.String("x"))
		if want := `k-bin="\x00\xff\n"`; err != nil || out.Value != want {
			t.Fatalf("binary metadata: got %q, %v", out.GetValue(), err)
		}
	})
}

// TestReservedMetadataIsDropped sends metadata with keys that gRPC
// reserves for its protocol, from the caller and from the handler: they
// are dropped, as gRPC-Go drops them, and the rest arrives.
func TestReservedMetadataIsDropped(t *testing.T) {
	reserved := []string{":authority", "content-type", "te", "grpc-encoding", "grpc-message", "grpc-message-type", "grpc-status", "grpc-timeout"}
	withReserved := func(key, value string) metadata.MD {
		md := metadata.Pairs(key, value)
		for _, k := range reserved {
			md[k] = []string{"3"}
		}
		return md
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if err := SetHeader(ctx, withReserved("h", "1")); err != nil {
				return nil, err
			}
			if err := SetTrailer(ctx, withReserved("t", "2")); err != nil {
				return nil, err
			}
			return incomingMD(ctx), nil
		}})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		var header, trailer metadata.MD
		out, err := c.Unary(metadata.NewOutgoingContext(ctx, withReserved("k", "v")), wrapperspb.String("x"), Header(&header), Trailer(&trailer))
		if err != nil || out.Value != `k="v"` {
			t.Fatalf("got %s, %v; want the call served with only k=v", out.GetValue(), err)
		}
		if !reflect.DeepEqual(header, metadata.Pairs("h", "1")) || !reflect.DeepEqual(trailer, metadata.Pairs("t", "2")) {
			t.Fatalf("got header %v and trailer %v, want h=1 and t=2 only", header, trailer)
		}
	})
}

// TestHandlerMetadataIsValidated has handlers set header and trailer
// metadata that breaks gRPC's rules: SetHeader, SendHeader and SetTrailer
// fail with Internal, as in gRPC-Go, the stream's SetTrailer (which
// cannot fail) leaves it out, and none of it reaches the caller.
func TestHandlerMetadataIsValidated(t *testing.T) {
	bad := metadata.MD{"Upper": {"v"}}
	badValue := metadata.MD{"k": {"line\nbreak"}}
	expectInternal := func(what string, err error) error {
		if status.Code(err) != codes.Internal {
			return fmt.Errorf("%s: got %v, want Internal", what, err)
		}
		return nil
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{
			unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				for _, err := range []error{
					expectInternal("SetHeader", SetHeader(ctx, bad)),
					expectInternal("SetTrailer", SetTrailer(ctx, badValue)),
					expectInternal("SendHeader", SendHeader(ctx, badValue)),
				} {
					if err != nil {
						return nil, status.Error(codes.Unknown, err.Error())
					}
				}
				return in, nil
			},
			serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				s.SetTrailer(bad)
				s.SetTrailer(metadata.Pairs("good", "1"))
				if err := expectInternal("SetHeader", s.SetHeader(badValue)); err != nil {
					return status.Error(codes.Unknown, err.Error())
				}
				return s.Send(in)
			},
		})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		var header, trailer metadata.MD
		if _, err := c.Unary(ctx, wrapperspb.String("x"), Header(&header), Trailer(&trailer)); err != nil {
			t.Fatal(err)
		}
		if len(header) != 0 || len(trailer) != 0 {
			t.Fatalf("unary: got header %v and trailer %v, want neither", header, trailer)
		}
		s, err := c.ServerStream(ctx, wrapperspb.String("x"))
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = s.Recv()
		}
		if !reflect.DeepEqual(s.Trailer(), metadata.Pairs("good", "1")) {
			t.Fatalf("stream: got trailer %v, want good=1 only", s.Trailer())
		}
	})
}

// TestInvalidMetadataFromTheWire has raw peers send metadata that breaks
// the rules: a callee fails a call whose call header carries it with
// INVALID_ARGUMENT, a caller fails a call whose response carries it with
// INTERNAL, and reserved keys from the wire are dropped.
func TestInvalidMetadataFromTheWire(t *testing.T) {
	msg, _ := appendMessage(nil, wrapperspb.String("x"), 1<<20)
	end := appendEmptyPart(nil, partClientEnd)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		t.Run("call header", func(t *testing.T) {
			srv := NewServer(muxOpt(tr))
			srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				return incomingMD(ctx), nil
			}})
			p := dial(t, serve(t, srv), muxOpt(tr))
			for _, kv := range [][]string{{"Upper", "v"}, {"bad key", "v"}, {"k", "a\nb"}, {"", "v"}} {
				tl, err := rawCall(ctx, p, rawParts(callHeaderWith("/test.Echo/Unary", kv...), msg, end), false)
				if err != nil {
					t.Fatal(err)
				}
				wantStatus(t, tl.err(), codes.InvalidArgument, "metadata")
			}
			st := openCall(t, ctx, p, rawParts(callHeaderWith("/test.Echo/Unary", "grpc-status", "5", ":path", "/x", "k", "v"), msg, end), true)
			r := partReader{st: st, maxMsg: 1 << 20}
			defer r.release()
			kind, payload, err := r.next()
			if err != nil || kind != partMessage {
				t.Fatalf("got part %d, %v; want the response", kind, err)
			}
			var out wrapperspb.StringValue
			if err := decodeMessage(payload, &out); err != nil || out.Value != `k="v"` {
				t.Fatalf("the handler saw metadata %q (%v), want k=v only", out.Value, err)
			}
		})
		t.Run("response header", func(t *testing.T) {
			p := rawCallee(t, tr, func(st *mux.Stream) {
				b, start := beginPart(nil, partResponseHeader)
				b = endPart(appendEntries(b, fieldHeaderMetadata, "Bad Key", "v"), start)
				b = rawParts(b, msg, appendTrailer(nil, &trailer{}))
				st.WriteLast(b)
			})
			_, err := echoClient{p}.Unary(ctx, wrapperspb.String("x"))
			wantStatus(t, err, codes.Internal, "metadata key")
		})
	})
}
