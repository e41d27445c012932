package rpc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestIdleTimeoutEndsSessionsWithoutCalls serves with a 600 ms
// IdleTimeout. Calls in either direction, one every 100 ms for a second,
// and a call that lasts twice the timeout, keep the session; once
// the last call has ended, the server ends the session a timeout later
// (not before, not much after), as Close does: its Peer's Err is
// mux.ErrIdleTimeout, it leaves Peers, and on the native transport the
// client learns why from the GoAway. A negative IdleTimeout is refused.
func TestIdleTimeoutEndsSessionsWithoutCalls(t *testing.T) {
	// Generous against a loaded machine: the calls that keep the session
	// may come late by five sixths of the timeout.
	const idle = 600 * time.Millisecond
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		peers := make(chan *Peer, 1)
		srv := NewServer(MuxConfig(&mux.Config{Transport: tr, IdleTimeout: idle}), OnPeer(func(p *Peer) { peers <- p }))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.Value == "slow" {
				time.Sleep(2 * idle)
			}
			return defaultEcho.Unary(ctx, in)
		}})
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
		addr := serve(t, srv)
		client := dial(t, addr, WithServices(callbacks), muxOpt(tr))
		server := await(t, peers, 5*time.Second, "OnPeer")

		alive := func(what string) {
			t.Helper()
			if err := client.Err(); err != nil {
				t.Fatalf("the session ended %s: %v", what, err)
			}
		}
		for i := range 10 {
			var cc *Peer = client
			who := "server"
			if i%2 == 1 {
				cc, who = server, "client"
			}
			if out, err := (echoClient{cc}).Unary(ctx, wrapperspb.String("ping")); err != nil || out.Value != who+":ping" {
				t.Fatalf("call %d: got %v, %v; the server's session: %v", i, out, err, server.Err())
			}
			time.Sleep(idle / 6)
			alive("between calls a sixth of the idle timeout apart")
		}
		if _, err := (echoClient{client}).Unary(ctx, wrapperspb.String("slow")); err != nil {
			t.Fatalf("a call longer than the idle timeout: %v", err)
		}
		lastCall := time.Now()
		alive("during a call longer than the idle timeout")

		select {
		case <-client.Done():
		case <-time.After(idle + 5*time.Second):
			t.Fatalf("the idle session still runs %v after its last call", time.Since(lastCall))
		}
		elapsed := time.Since(lastCall)
		t.Logf("the session ended %v after its last call", elapsed.Round(time.Millisecond))
		if elapsed < idle*9/10 || elapsed > idle+time.Second {
			t.Fatalf("the session ended %v after its last call, want about %v", elapsed, idle)
		}
		<-server.Done()
		if err := server.Err(); !errors.Is(err, mux.ErrIdleTimeout) || !errors.Is(err, mux.ErrSessionClosed) {
			t.Fatalf("the server's session ended with %v, want mux.ErrIdleTimeout", err)
		}
		if tr == mux.Native {
			var g *mux.GoAwayError
			if err := client.Err(); !errors.As(err, &g) || !g.Remote || g.Code != mux.GoAwayNormal || string(g.Debug) != "idle timeout" {
				t.Fatalf("the client's session ended with %v, want the server's GoAway saying idle timeout", err)
			}
		}
		eventually(t, 5*time.Second, "the server to forget the peer", func() bool { return len(srv.Peers()) == 0 })

		_, err := Dial(ctx, addr, MuxConfig(&mux.Config{Transport: tr, IdleTimeout: -1}))
		if err == nil || !strings.Contains(err.Error(), "IdleTimeout") {
			t.Fatalf("Dial with a negative IdleTimeout: %v, want an error naming it", err)
		}
	})
}
