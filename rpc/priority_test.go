package rpc

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
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
