package rpc

import (
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestStreamHeaderArrivesBeforeAnyMessage has each streaming handler send
// its header with SendHeader and then wait for the caller before sending
// any message: the caller's Header returns the header within a second (it
// must not wait for a message or the trailer, which come only after the
// caller goes on), and the call then completes normally.
func TestStreamHeaderArrivesBeforeAnyMessage(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		md := metadata.Pairs("h", "early")
		proceed := make(chan struct{}, 1) // the caller has its header
		impl := &funcEcho{
			serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
				if err := s.SendHeader(md); err != nil {
					return err
				}
				select {
				case <-proceed:
				case <-s.Context().Done():
					return s.Context().Err()
				}
				return s.Send(in)
			},
			clientStream: func(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
				if err := s.SendHeader(md); err != nil {
					return err
				}
				in, err := s.Recv() // the caller sends only once it has the header
				if err != nil {
					return err
				}
				return s.SendAndClose(in)
			},
			bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
				if err := s.SendHeader(md); err != nil {
					return err
				}
				for {
					in, err := s.Recv()
					if errors.Is(err, io.EOF) {
						return nil
					}
					if err != nil {
						return err
					}
					if err := s.Send(in); err != nil {
						return err
					}
				}
			},
		}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		in := wrapperspb.String("x")

		header := func(kind string, s interface{ Header() (metadata.MD, error) }) {
			t.Helper()
			got := timed(func() error {
				h, err := s.Header()
				if err == nil && !reflect.DeepEqual(h, md) {
					t.Errorf("%s: Header returned %v, want %v", kind, h, md)
				}
				return err
			})
			r := await(t, got, 10*time.Second, kind+"'s Header to return")
			if r.err != nil {
				t.Fatalf("%s: Header: %v", kind, r.err)
			}
		}
		within := func(kind string, start time.Time) {
			t.Helper()
			if d := time.Since(start); d > time.Second {
				t.Errorf("%s: Header returned %v after the handler sent it", kind, d)
			}
		}

		start := time.Now()
		ss, err := c.ServerStream(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		header("serverStream", ss)
		within("serverStream", start)
		proceed <- struct{}{}
		if m, err := ss.Recv(); err != nil || m.Value != "x" {
			t.Fatalf("serverStream: got %v, %v", m, err)
		}
		if _, err := ss.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("serverStream end: %v", err)
		}

		start = time.Now()
		cs, err := c.ClientStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		header("clientStream", cs)
		within("clientStream", start)
		if err := cs.Send(in); err != nil {
			t.Fatal(err)
		}
		if m, err := cs.CloseAndRecv(); err != nil || m.Value != "x" {
			t.Fatalf("clientStream: got %v, %v", m, err)
		}

		start = time.Now()
		bs, err := c.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		header("bidi", bs)
		within("bidi", start)
		if err := bs.Send(in); err != nil {
			t.Fatal(err)
		}
		if m, err := bs.Recv(); err != nil || m.Value != "x" {
			t.Fatalf("bidi: got %v, %v", m, err)
		}
		bs.CloseSend()
		if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("bidi end: %v", err)
		}
	})
}
