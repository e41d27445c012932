package rpc

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Tests of the caller's side of a call: what Invoke and a ClientStream
// report for what the callee sends, and for the caller's own context.

// TestCancelledClientStreamNeverReportsOK is gRPC's interop case
// cancel_after_begin, many times over: a client-streaming call whose
// context is cancelled before CloseAndRecv fails with Canceled, every
// time, though the callee answers OK as soon as the requests end, or has
// answered already. So does its RecvMsg after Header, and a call whose
// deadline has passed fails with DeadlineExceeded. The SendMsg of a
// client-streaming call whose context has ended returns io.EOF, as
// gRPC's does, leaving the status to RecvMsg: gRPC's interop case
// timeout_on_sleeping_server accepts no other error from Send.
func TestCancelledClientStreamNeverReportsOK(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 60*time.Second)
		impl := &funcEcho{clientStream: func(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			if md, _ := metadata.FromIncomingContext(s.Context()); len(md.Get("answer-at-once")) == 0 {
				return defaultEcho.ClientStream(s)
			}
			s.SetHeader(metadata.Pairs("h", "1"))
			return s.SendAndClose(wrapperspb.String("early"))
		}}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}

		t.Run("CloseAndRecv", func(t *testing.T) {
			for i := range 3000 {
				callCtx, cancel := context.WithCancel(ctx)
				s, err := c.ClientStream(callCtx)
				if err != nil {
					t.Fatal(err)
				}
				cancel()
				_, err = s.CloseAndRecv()
				if status.Code(err) != codes.Canceled {
					t.Fatalf("call %d: CloseAndRecv after cancel: got %v, want Canceled", i, err)
				}
			}
		})
		t.Run("answered before the cancel", func(t *testing.T) {
			early := metadata.AppendToOutgoingContext(ctx, "answer-at-once", "1")
			for i := range 200 {
				callCtx, cancel := context.WithCancel(early)
				s, err := c.ClientStream(callCtx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.Header(); err != nil { // the answer has arrived
					t.Fatal(err)
				}
				cancel()
				_, err = s.CloseAndRecv()
				if status.Code(err) != codes.Canceled {
					t.Fatalf("call %d: CloseAndRecv after cancel: got %v, want Canceled", i, err)
				}
			}
		})
		t.Run("SendMsg", func(t *testing.T) {
			for i := range 100 {
				callCtx, cancel := context.WithCancel(ctx)
				s, err := c.ClientStream(callCtx)
				if err != nil {
					t.Fatal(err)
				}
				cancel()
				if err := s.Send(wrapperspb.String("x")); err != io.EOF {
					t.Fatalf("call %d: Send after cancel: got %v, want io.EOF", i, err)
				}
				_, err = s.CloseAndRecv()
				if status.Code(err) != codes.Canceled {
					t.Fatalf("call %d: CloseAndRecv after cancel: got %v, want Canceled", i, err)
				}
			}
		})
		t.Run("Header", func(t *testing.T) {
			for i := range 100 {
				callCtx, cancel := context.WithCancel(ctx)
				s, err := c.Bidi(callCtx)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Send(wrapperspb.String("x")); err != nil {
					t.Fatal(err)
				}
				s.CloseSend()
				cancel()
				if md, err := s.Header(); md != nil || err != nil {
					t.Fatalf("call %d: Header after cancel: got %v, %v; want nil, nil", i, md, err)
				}
				if _, err := s.Recv(); status.Code(err) != codes.Canceled {
					t.Fatalf("call %d: Recv after cancel: got %v, want Canceled", i, err)
				}
			}
		})
		t.Run("deadline", func(t *testing.T) {
			callCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			s, err := c.ClientStream(callCtx)
			if err != nil {
				t.Fatal(err)
			}
			<-callCtx.Done()
			if err := s.Send(wrapperspb.String("x")); err != io.EOF {
				t.Fatalf("Send after the deadline: got %v, want io.EOF", err)
			}
			if _, err := s.CloseAndRecv(); status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("CloseAndRecv after the deadline: got %v, want DeadlineExceeded", err)
			}
		})
		checkEcho(t, ctx, c.cc, "server")
	})
}

// TestNilRequestSendsEmptyMessage is gRPC's interop case
// unimplemented_method, which calls with a nil request: a nil request,
// untyped or a typed nil pointer, goes out as an empty message, by Invoke
// and by SendMsg; the callee answers as it would an empty request.
func TestNilRequestSendsEmptyMessage(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		p := dial(t, serve(t, srv), muxOpt(tr))

		err := p.Invoke(ctx, "/test.Echo/Nope", nil, new(wrapperspb.StringValue))
		wantStatus(t, err, codes.Unimplemented, "unknown method")
		for _, req := range []any{nil, (*wrapperspb.StringValue)(nil)} {
			out := new(wrapperspb.StringValue)
			if err := p.Invoke(ctx, "/test.Echo/Unary", req, out); err != nil {
				t.Fatalf("Invoke with %T(nil): %v", req, err)
			}
			if out.Value != "server:" {
				t.Fatalf("Invoke with %T(nil): got %q, want the answer to an empty request", req, out.Value)
			}
			s, err := p.NewStream(ctx, &echoDesc.Streams[0], "/test.Echo/ServerStream")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(req); err != nil {
				t.Fatalf("SendMsg with %T(nil): %v", req, err)
			}
			if err := s.RecvMsg(out); err != nil || out.Value != "server:" {
				t.Fatalf("stream with a %T(nil) request: got %q, %v; want the answer to an empty request", req, out.Value, err)
			}
		}
	})
}

// scriptedCallee serves calls on sessions it accepts with answer, which gets
// the method and writes the callee's parts by hand; the stream is then
// closed. It returns the address to dial.
func scriptedCallee(t *testing.T, tr mux.Transport, answer func(method string) []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ml, err := mux.NewListener(ln, &mux.Config{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var sessions []*mux.Session // the accept loop's until done is closed
	go func() {
		defer close(done)
		for {
			sess, err := ml.Accept()
			if err != nil {
				return
			}
			sessions = append(sessions, sess)
			welcomeHellos(sess)
			sess.HandleType(StreamType, func(st *mux.Stream) {
				defer st.Close()
				r := partReader{st: st, maxMsg: 1 << 20}
				defer r.release()
				method := ""
				for {
					kind, payload, err := r.next()
					if err != nil {
						return
					}
					if kind == partCallHeader {
						h, err := parseCallHeader(payload)
						if err != nil {
							return
						}
						method = string(h.method)
					}
					if kind == partClientEnd {
						break
					}
				}
				st.WriteLast(answer(method))
			})
		}
	}()
	t.Cleanup(func() {
		ml.Close()
		<-done
		for _, sess := range sessions {
			sess.Kill()
		}
	})
	return ln.Addr().String()
}

// TestResponseHeaderOutOfPlaceIsInternal has a callee answer with a
// response header after a message, or with two response headers: both
// break the protocol (a callee sends at most one, before any message), so
// unary and streaming calls fail with Internal, Header included.
func TestResponseHeaderOutOfPlaceIsInternal(t *testing.T) {
	hdr := appendResponseHeader(nil, metadata.Pairs("h", "1"), "")
	msg, _ := appendMessage(nil, wrapperspb.String("x"), 1<<20)
	ok := appendTrailer(nil, &trailer{})
	answers := map[string][]byte{
		"after a message": rawParts(msg, hdr, ok),
		"twice":           rawParts(hdr, hdr, msg, ok),
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		var answer atomic.Pointer[[]byte] // read by the callee's goroutines
		p := dial(t, scriptedCallee(t, tr, func(string) []byte { return *answer.Load() }), muxOpt(tr))
		for name, wire := range answers {
			answer.Store(&wire)
			t.Run(name, func(t *testing.T) {
				err := p.Invoke(ctx, "/test.Echo/Unary", wrapperspb.String("x"), new(wrapperspb.StringValue))
				wantStatus(t, err, codes.Internal, "response header")

				for _, desc := range echoDesc.Streams {
					s, err := p.NewStream(ctx, &desc, "/test.Echo/"+desc.StreamName)
					if err != nil {
						t.Fatal(err)
					}
					s.SendMsg(wrapperspb.String("x"))
					s.CloseSend()
					if _, err := s.Header(); err != nil {
						t.Fatalf("%s: Header: %v", desc.StreamName, err)
					}
					for err == nil {
						err = s.RecvMsg(new(wrapperspb.StringValue))
					}
					wantStatus(t, err, codes.Internal, "response header")
				}
			})
		}
	})
}

// TestOneRequestCallSendsAtOnce makes calls that take one request through
// NewStream, as generic clients, proxies and interceptors do, and asks for
// the response (and its header) before CloseSend: the request went out
// with SendMsg, so the answer comes, and a later CloseSend changes
// nothing.
func TestOneRequestCallSendsAtOnce(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		impl := &funcEcho{serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
			if err := s.SendHeader(metadata.Pairs("h", "1")); err != nil {
				return err
			}
			return s.Send(wrapperspb.String("server:" + in.Value))
		}}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		p := dial(t, serve(t, srv), muxOpt(tr))

		t.Run("serverStream", func(t *testing.T) {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			s, err := p.NewStream(callCtx, &echoDesc.Streams[0], "/test.Echo/ServerStream")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(wrapperspb.String("x")); err != nil {
				t.Fatal(err)
			}
			header := async(func() error {
				md, err := s.Header()
				if err == nil && len(md.Get("h")) != 1 {
					err = errors.New("the header lacks what the handler sent")
				}
				return err
			})
			if err := await(t, header, 3*time.Second, "the response header, before CloseSend"); err != nil {
				t.Fatal(err)
			}
			out := new(wrapperspb.StringValue)
			if err := s.RecvMsg(out); err != nil || out.Value != "server:x" {
				t.Fatalf("got %q, %v", out.Value, err)
			}
			if err := s.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if err := s.RecvMsg(out); err != io.EOF {
				t.Fatalf("the call's end: got %v, want io.EOF", err)
			}
		})
		t.Run("unary", func(t *testing.T) {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			s, err := p.NewStream(callCtx, &StreamDesc{StreamName: "Unary"}, "/test.Echo/Unary")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(wrapperspb.String("y")); err != nil {
				t.Fatal(err)
			}
			out := new(wrapperspb.StringValue)
			recv := async(func() error { return s.RecvMsg(out) })
			if err := await(t, recv, 3*time.Second, "the response, before CloseSend"); err != nil {
				t.Fatal(err)
			}
			if out.Value != "server:y" {
				t.Fatalf("got %q", out.Value)
			}
			if err := s.SendMsg(wrapperspb.String("z")); status.Code(err) != codes.Internal {
				t.Fatalf("a second request: got %v, want Internal", err)
			}
			if err := s.CloseSend(); err != nil {
				t.Fatal(err)
			}
		})
		checkEcho(t, ctx, p, "server")
	})
}

// TestResponselessCallIsCardinalityViolation has handlers of calls that
// return one response end with status OK and none: the caller gets
// Internal, "cardinality violation", never (nil, io.EOF), through Invoke,
// CloseAndRecv and a one-response stream's RecvMsg, with or without
// Header first.
func TestResponselessCallIsCardinalityViolation(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		p := dial(t, scriptedCallee(t, tr, func(string) []byte { return appendTrailer(nil, &trailer{}) }), muxOpt(tr))

		for _, header := range []bool{false, true} {
			s, err := echoClient{p}.ClientStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(wrapperspb.String("x")); err != nil {
				t.Fatal(err)
			}
			s.CloseSend() // the callee answers once the requests end
			if header {
				if md, err := s.Header(); md != nil || err != nil {
					t.Fatalf("Header: got %v, %v; want nil, nil", md, err)
				}
			}
			out, err := s.CloseAndRecv()
			if out != nil {
				t.Fatalf("got a response %v", out)
			}
			wantStatus(t, err, codes.Internal, "cardinality violation")

			s2, err := p.NewStream(ctx, &StreamDesc{StreamName: "Unary"}, "/test.Echo/Unary")
			if err != nil {
				t.Fatal(err)
			}
			if err := s2.SendMsg(wrapperspb.String("x")); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, s2.RecvMsg(new(wrapperspb.StringValue)), codes.Internal, "cardinality violation")
		}
		err := p.Invoke(ctx, "/test.Echo/Unary", wrapperspb.String("x"), new(wrapperspb.StringValue))
		wantStatus(t, err, codes.Internal, "cardinality violation")
	})
}

// TestHeaderAndTrailerWithoutMetadata ends calls without a response
// header: a stream's Header returns nil and no error, and RecvMsg the
// status. The Header and Trailer call options are assigned at every
// call's end, failed or not, so a variable reused from a call that had
// metadata holds nil after one that had none, on unary and streaming
// calls.
func TestHeaderAndTrailerWithoutMetadata(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		impl := &funcEcho{
			unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				if in.Value == "metadata" {
					SetHeader(ctx, metadata.Pairs("h", "1"))
					SetTrailer(ctx, metadata.Pairs("t", "1"))
					return in, nil
				}
				return nil, status.Error(codes.NotFound, "bare")
			},
			serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				if in.Value == "metadata" {
					s.SetHeader(metadata.Pairs("h", "1"))
					s.SetTrailer(metadata.Pairs("t", "1"))
					return s.Send(in)
				}
				return status.Error(codes.NotFound, "bare")
			},
		}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}

		s, err := c.ServerStream(ctx, wrapperspb.String("bare"))
		if err != nil {
			t.Fatal(err)
		}
		if md, err := s.Header(); md != nil || err != nil {
			t.Fatalf("Header of a call that ended without one: got %v, %v; want nil, nil", md, err)
		}
		_, err = s.Recv()
		wantStatus(t, err, codes.NotFound, "bare")

		var header, trailer metadata.MD
		wantOptions := func(what string, withMetadata bool) {
			t.Helper()
			if got := len(header.Get("h")) == 1; got != withMetadata || !withMetadata && header != nil {
				t.Errorf("%s: Header option holds %v", what, header)
			}
			if got := len(trailer.Get("t")) == 1; got != withMetadata || !withMetadata && trailer != nil {
				t.Errorf("%s: Trailer option holds %v", what, trailer)
			}
		}
		opts := []CallOption{Header(&header), Trailer(&trailer)}
		for _, req := range []string{"metadata", "bare", "metadata"} {
			_, err := c.Unary(ctx, wrapperspb.String(req), opts...)
			if req == "bare" && status.Code(err) != codes.NotFound || req != "bare" && err != nil {
				t.Fatalf("unary %s: %v", req, err)
			}
			wantOptions("unary "+req, req == "metadata")

			s, err := c.ServerStream(ctx, wrapperspb.String(req), opts...)
			if err != nil {
				t.Fatal(err)
			}
			for err == nil {
				_, err = s.Recv()
			}
			wantOptions("stream "+req, req == "metadata")
		}
		// A call that fails before any answer assigns nil too.
		_, err = c.Unary(ctx, wrapperspb.String("metadata"), opts...)
		if err != nil {
			t.Fatal(err)
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_, err = c.Unary(cancelled, wrapperspb.String("metadata"), opts...)
		wantStatus(t, err, codes.Canceled, "")
		wantOptions("a cancelled call", false)
	})
}
