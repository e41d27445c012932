package rpc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestHandlerRecvAfterReturnTouchesNoPooledBuffer has bidi handlers
// return while a goroutine they started is still receiving, as gRPC
// allows, while other calls of the same peer run big unary echoes. The
// call's read buffer goes back to a pool when the call ends: the
// goroutine must not read into it or decode from it after that (the race
// detector sees it if it does), and every echo answers intact.
func TestHandlerRecvAfterReturnTouchesNoPooledBuffer(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 60*time.Second)
		request := "bidi:" + strings.Repeat("b", 16<<10)
		var readers sync.WaitGroup
		corrupt := make(chan string, 1)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					m, err := s.Recv()
					if err != nil {
						return
					}
					if m.Value != request {
						select {
						case corrupt <- fmt.Sprintf("%.40q... (%d bytes)", m.Value, len(m.Value)):
						default:
						}
					}
				}
			}()
			time.Sleep(rand.N(2 * time.Millisecond))
			return status.Error(codes.Aborted, "returned while a goroutine receives")
		}})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}

		echoCtx, stopEchoes := context.WithCancel(ctx)
		big := strings.Repeat("u", 32<<10)
		var echoes sync.WaitGroup
		echoErr := make(chan error, 4)
		for range 4 {
			echoes.Add(1)
			go func() {
				defer echoes.Done()
				for echoCtx.Err() == nil {
					out, err := c.Unary(echoCtx, wrapperspb.String(big))
					if echoCtx.Err() != nil {
						return
					}
					if err != nil || out.Value != "server:"+big {
						echoErr <- fmt.Errorf("echo: %v (%d bytes back)", err, len(out.GetValue()))
						return
					}
				}
			}()
		}
		for range 100 {
			s, err := c.Bidi(ctx)
			if err != nil {
				t.Fatal(err)
			}
			sent := async(func() error {
				for {
					if err := s.Send(wrapperspb.String(request)); err != nil {
						return err
					}
				}
			})
			_, err = s.Recv()
			wantStatus(t, err, codes.Aborted, "returned while a goroutine receives")
			await(t, sent, 10*time.Second, "the bidi sender to stop")
		}
		stopEchoes()
		echoes.Wait()
		readersDone := make(chan struct{})
		go func() { readers.Wait(); close(readersDone) }()
		await(t, readersDone, 10*time.Second, "the handlers' receiving goroutines to return")
		select {
		case err := <-echoErr:
			t.Fatal(err)
		case m := <-corrupt:
			t.Fatalf("a receiving goroutine decoded a corrupt request: %s", m)
		default:
		}
	})
}

// TestCalleeEndsCallAtItsDeadline makes calls whose caller never resets
// the stream, as if its RESET were lost: the callee itself ends each
// call at its deadline with DEADLINE_EXCEEDED, whatever the handler
// does, and the handler's Send and Recv fail with DeadlineExceeded.
func TestCalleeEndsCallAtItsDeadline(t *testing.T) {
	const deadline = 300 * time.Millisecond
	const margin = 5 * time.Second // generous: the machine is shared
	msg, _ := appendMessage(nil, wrapperspb.String("x"), 1<<20)
	end := appendEmptyPart(nil, partClientEnd)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		handlerErr := make(chan error, 1)
		report := func(err error) error {
			select {
			case handlerErr <- err:
			default: // a report no subtest awaited, as the call never ended
			}
			return err
		}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{
			serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				out := wrapperspb.String("tick")
				if in.Value == "big" {
					out = wrapperspb.String(strings.Repeat("t", 64<<10))
				}
				for {
					if err := s.Send(out); err != nil {
						return report(err)
					}
					if in.Value != "big" {
						time.Sleep(time.Millisecond)
					}
				}
			},
			bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
				_, err := s.Recv()
				return report(err)
			},
		})
		p := dial(t, serve(t, srv), muxOpt(tr))
		header := func(method string, timeout time.Duration) []byte {
			return appendCallHeader(nil, "/test.Echo/"+method, timeout, 0, nil, "")
		}
		wantEndedInTime := func(t *testing.T, st *mux.Stream, start time.Time) {
			t.Helper()
			a, err := readAnswer(st)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			wantStatus(t, a.status, codes.DeadlineExceeded, "")
			if took := time.Since(start); took > margin {
				t.Fatalf("the call ended after %v, its deadline was %v", took, deadline)
			}
		}

		t.Run("server-streaming handler that never stops", func(t *testing.T) {
			start := time.Now()
			st := openCall(t, ctx, p, rawParts(header("ServerStream", deadline), msg, end), true)
			wantEndedInTime(t, st, start)
			wantStatus(t, await(t, handlerErr, margin, "the handler's Send to fail"), codes.DeadlineExceeded, "")
		})
		t.Run("bidi handler waiting for a request", func(t *testing.T) {
			start := time.Now()
			st := openCall(t, ctx, p, header("Bidi", deadline), false)
			wantEndedInTime(t, st, start)
			wantStatus(t, await(t, handlerErr, margin, "the handler's Recv to fail"), codes.DeadlineExceeded, "")
			if tr == mux.Smux {
				return // no resets on smux: the callee closes the stream
			}
			// The trailer came first, then the callee reset the stream,
			// whose caller had not ended its direction.
			eventually(t, margin, "the caller's writes to fail", func() bool {
				_, err := st.Write(msg)
				var reset *mux.ResetError
				return errors.As(err, &reset)
			})
		})
		t.Run("unary answered after its deadline", func(t *testing.T) {
			start := time.Now()
			st := openCall(t, ctx, p, rawParts(header("Unary", time.Microsecond), msg, end), true)
			wantEndedInTime(t, st, start)
		})
		t.Run("server-streaming caller that reads nothing", func(t *testing.T) {
			start := time.Now()
			st := openCall(t, ctx, p, rawParts(header("ServerStream", deadline), part(partMessage, 0x0a, 3, 'b', 'i', 'g'), end), true)
			wantStatus(t, await(t, handlerErr, margin, "the handler's Send to fail"), codes.DeadlineExceeded, "")
			if took := time.Since(start); took > margin {
				t.Fatalf("the handler's Send failed after %v, the deadline was %v", took, deadline)
			}
			// Its window full, the callee could not send the trailer: it
			// reset the stream instead, or closed it on smux.
			a, err := readAnswer(st)
			var reset *mux.ResetError
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				t.Fatal("the call's stream never ended")
			case tr == mux.Native && (!errors.As(err, &reset) || reset.Code != resetDeadlineExceeded):
				t.Fatalf("got %+v, %v; want the stream reset with code %#x", a, err, resetDeadlineExceeded)
			}
		})
	})
}

// TestEndPartWithPayloadIsMalformed sends calls whose end part carries a
// payload, which would overwrite a unary request read before it: each
// call fails with INVALID_ARGUMENT instead of being served.
func TestEndPartWithPayloadIsMalformed(t *testing.T) {
	msg, _ := appendMessage(nil, wrapperspb.String("request"), 1<<20)
	endWithPayload := part(partClientEnd, 0x0a, 0x01, 'Z') // StringValue{"Z"}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		p := dial(t, serve(t, srv), muxOpt(tr))
		for _, method := range []string{"Unary", "ServerStream", "ClientStream", "Bidi"} {
			t.Run(method, func(t *testing.T) {
				hdr := appendCallHeader(nil, "/test.Echo/"+method, 0, 0, nil, "")
				tl, err := rawCall(ctx, p, rawParts(hdr, msg, endWithPayload), false)
				if err != nil {
					t.Fatal(err)
				}
				wantStatus(t, tl.err(), codes.InvalidArgument, "end part with a payload")
				checkEcho(t, ctx, p, "server")
			})
		}
	})
}

// TestStatusMessageIsSentAsValidUTF8 fails calls with status messages
// that are not valid UTF-8: the message, a protobuf string, reaches the
// caller with U+FFFD in place of each invalid sequence, as in gRPC, so
// that the status can be marshalled.
func TestStatusMessageIsSentAsValidUTF8(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			return nil, status.Error(codes.Aborted, "bad \xff\xfe bytes")
		}})
		p := dial(t, serve(t, srv), muxOpt(tr))
		_, err := echoClient{p}.Unary(ctx, wrapperspb.String("x"))
		wantStatus(t, err, codes.Aborted, "bad \uFFFD bytes")
		s := status.Convert(err)
		if !utf8.ValidString(s.Message()) {
			t.Fatalf("status message %q is not valid UTF-8", s.Message())
		}
		if _, err := proto.Marshal(s.Proto()); err != nil {
			t.Fatalf("the status does not marshal: %v", err)
		}
	})
}

// TestSetHeaderWithNothingAfterSendHeader sets empty header metadata
// after the header went out, which gRPC accepts as adding nothing; more
// metadata then still fails with Internal.
func TestSetHeaderWithNothingAfterSendHeader(t *testing.T) {
	check := func(setHeader func(metadata.MD) error) error {
		for _, md := range []metadata.MD{nil, {}} {
			if err := setHeader(md); err != nil {
				return fmt.Errorf("SetHeader(%#v) after SendHeader: %w", md, err)
			}
		}
		if err := setHeader(metadata.Pairs("late", "x")); status.Code(err) != codes.Internal {
			return fmt.Errorf("SetHeader with metadata after SendHeader: got %v, want Internal", err)
		}
		return nil
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{
			unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				if err := SendHeader(ctx, metadata.Pairs("h", "1")); err != nil {
					return nil, err
				}
				if err := check(func(md metadata.MD) error { return SetHeader(ctx, md) }); err != nil {
					return nil, status.Error(codes.Unknown, err.Error())
				}
				return in, nil
			},
			serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				if err := s.SendHeader(metadata.Pairs("h", "1")); err != nil {
					return err
				}
				if err := check(s.SetHeader); err != nil {
					return status.Error(codes.Unknown, err.Error())
				}
				return s.Send(in)
			},
		})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		if _, err := c.Unary(ctx, wrapperspb.String("x")); err != nil {
			t.Fatal(err)
		}
		s, err := c.ServerStream(ctx, wrapperspb.String("x"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMaxHeaderListSize bounds the call headers a server accepts, below
// and above the default, and the response headers and trailers a client
// accepts: what is over the limit fails the call with ResourceExhausted,
// what is under it is served.
func TestMaxHeaderListSize(t *testing.T) {
	mdOf := func(n int) metadata.MD { return metadata.Pairs("big", strings.Repeat("m", n)) }
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		callWith := func(p *Peer, md metadata.MD) error {
			_, err := echoClient{p}.Unary(metadata.NewOutgoingContext(ctx, md), wrapperspb.String("x"))
			return err
		}
		t.Run("call headers", func(t *testing.T) {
			small := NewServer(muxOpt(tr), MaxHeaderListSize(8<<10))
			small.RegisterService(&echoDesc, &echoImpl{name: "server"})
			p := dial(t, serve(t, small), muxOpt(tr))
			wantStatus(t, callWith(p, mdOf(64<<10)), codes.ResourceExhausted, "header or trailer larger than max")
			if err := callWith(p, mdOf(4<<10)); err != nil {
				t.Fatal(err)
			}
			large := NewServer(muxOpt(tr), MaxHeaderListSize(4<<20))
			large.RegisterService(&echoDesc, &echoImpl{name: "server"})
			p = dial(t, serve(t, large), muxOpt(tr))
			if err := callWith(p, mdOf(2<<20)); err != nil {
				t.Fatalf("a 2 MiB call header under a limit of 4 MiB: %v", err)
			}
		})
		t.Run("response headers and trailers", func(t *testing.T) {
			srv := NewServer(muxOpt(tr))
			srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				switch in.Value {
				case "header":
					return in, SetHeader(ctx, mdOf(64<<10))
				case "trailer":
					return in, SetTrailer(ctx, mdOf(64<<10))
				}
				return defaultEcho.Unary(ctx, in)
			}})
			p := dial(t, serve(t, srv), muxOpt(tr), MaxHeaderListSize(8<<10))
			for _, which := range []string{"header", "trailer"} {
				_, err := echoClient{p}.Unary(ctx, wrapperspb.String(which))
				wantStatus(t, err, codes.ResourceExhausted, "header or trailer larger than max")
			}
			checkEcho(t, ctx, p, "server")
		})
	})
}

// TestCallHeaderTimeoutRoundsUp encodes call headers with timeouts that
// are not whole microseconds: the callee's deadline must never come
// before the caller's, so they round up.
func TestCallHeaderTimeoutRoundsUp(t *testing.T) {
	for _, tc := range []struct{ timeout, want time.Duration }{
		{time.Nanosecond, time.Microsecond},
		{1500 * time.Nanosecond, 2 * time.Microsecond},
		{time.Second, time.Second},
		{time.Second + time.Nanosecond, time.Second + time.Microsecond},
	} {
		h, err := parseCallHeader(appendCallHeader(nil, "/test.Echo/Unary", tc.timeout, 0, nil, "")[partPrefixLen:])
		if err != nil {
			t.Fatal(err)
		}
		if h.timeout != tc.want {
			t.Errorf("a timeout of %v went out as %v, want %v", tc.timeout, h.timeout, tc.want)
		}
	}
}

// TestBrokenPartEndsStreamingCallAtOnce sends a client-streaming call a
// part of an unknown kind after its first request. The handler, which
// ignores its failed receive and answers OK, cannot end the call so: the
// call ends at once with INVALID_ARGUMENT, as after a part over the size
// limit, and the handler's receive failed with the same status.
func TestBrokenPartEndsStreamingCallAtOnce(t *testing.T) {
	msg, _ := appendMessage(nil, wrapperspb.String("x"), 1<<20)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		recvErr := make(chan error, 1)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{clientStream: func(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			if _, err := s.Recv(); err != nil {
				return err
			}
			_, err := s.Recv()
			recvErr <- err
			return s.SendAndClose(wrapperspb.String("ignored the broken part"))
		}})
		p := dial(t, serve(t, srv), muxOpt(tr))
		hdr := appendCallHeader(nil, "/test.Echo/ClientStream", 0, 0, nil, "")
		tl, err := rawCall(ctx, p, rawParts(hdr, msg, part(9, 1, 2, 3)), false)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, tl.err(), codes.InvalidArgument, "unexpected part 9")
		wantStatus(t, await(t, recvErr, 5*time.Second, "the handler's second receive"), codes.InvalidArgument, "unexpected part 9")
		checkEcho(t, ctx, p, "server")
	})
}
