package rpc

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCallPriorityReachesTheCallee checks that CallPriority travels in the
// call header and that the callee answers on a stream of the same
// priority, for a unary and a streaming call, and that a call without
// the option runs at normal priority. On the Smux transport, which has
// no priorities, every stream stays at normal priority.
func TestCallPriorityReachesTheCallee(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "s"})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}
		ctx := testCtx(t, 10*time.Second)
		want := func(p mux.Priority) string {
			if tr == mux.Smux {
				p = mux.PriorityNormal
			}
			return fmt.Sprint("s:", p)
		}
		for _, p := range []mux.Priority{mux.PriorityNormal, mux.PriorityHigh, mux.PriorityLow, 127, -128} {
			var opts []CallOption
			if p != mux.PriorityNormal {
				opts = append(opts, CallPriority(p))
			}
			got, err := c.Unary(ctx, wrapperspb.String("priority"), opts...)
			if err != nil {
				t.Fatal(err)
			}
			// echoImpl answers "priority" with its stream's priority,
			// without the "s:" a Bidi reply has.
			if "s:"+got.Value != want(p) {
				t.Errorf("unary at priority %d: the callee's stream is at %s", p, got.Value)
			}
			bidi, err := c.Bidi(ctx, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := bidi.Send(wrapperspb.String("priority")); err != nil {
				t.Fatal(err)
			}
			reply, err := bidi.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if reply.Value != want(p) {
				t.Errorf("bidi at priority %d: the callee's stream is at %s", p, reply.Value)
			}
			bidi.CloseSend()
			if _, err := bidi.Recv(); err != io.EOF {
				t.Fatalf("bidi after CloseSend: %v, want io.EOF", err)
			}
		}
	})
}

// TestCallHeaderLenBoundsEveryCallHeader checks that the room the caller
// reserves for a call header (callHeaderLen) is never less than what
// appendCallHeader writes, whatever its priority, timeout and metadata.
func TestCallHeaderLenBoundsEveryCallHeader(t *testing.T) {
	for _, md := range []metadata.MD{nil, metadata.Pairs("k", "v", "x-bin", "\x00\xff", "k", strings.Repeat("v", 300))} {
		for _, timeout := range []time.Duration{0, time.Microsecond, maxTimeout} {
			for _, p := range []mux.Priority{mux.PriorityNormal, mux.PriorityHigh, mux.PriorityLow, 127, -128} {
				method := "/test.Echo/" + strings.Repeat("m", 200)
				if got, room := len(appendCallHeader(nil, method, timeout, p, md, "")), callHeaderLen(method, md, ""); got > room {
					t.Errorf("priority %d, timeout %v, %d metadata keys: the call header takes %d bytes, callHeaderLen reserves %d", p, timeout, len(md), got, room)
				}
			}
		}
	}
}
