package rpc

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc/internal/faultproxy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// proxyTo starts a fault-injecting proxy to addr, closed when the test
// ends.
func proxyTo(t testing.TB, addr string) *faultproxy.Proxy {
	t.Helper()
	px, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	return px
}

// timedErr is a call's error and when the call returned.
type timedErr struct {
	err error
	at  time.Time
}

// timed runs f in its own goroutine and delivers its error and the time
// it returned.
func timed(f func() error) <-chan timedErr {
	c := make(chan timedErr, 1)
	go func() {
		err := f()
		c <- timedErr{err, time.Now()}
	}()
	return c
}

// Who calls whom, in the cut tests.
const (
	clientCallsServer = "clientCallsServer"
	serverCallsClient = "serverCallsClient"
	callbackInHandler = "callbackInHandler" // client calls server, whose handler calls the client back
)

// cutBound is how soon after a cut every call and handler must have seen
// it: the cause is immediate, a segment on loopback, so this is slack for
// a busy machine.
const cutBound = 2 * time.Second

// TestCutConnectionEndsEveryPendingCall cuts the TCP connection under a
// session with the proxy, with RST and with FIN (toward both peers), while
// a call of each kind is blocked in its handler: a client's call to the
// server, a server's call to its client, and a client's call whose
// server handler is itself blocked in a call back to the client. Within
// 2 s of the cut every pending call, on both sides, fails with
// Unavailable (not io.EOF), every handler's context ends (the handlers
// block on ctx.Done), both Peers see their session end (with ECONNRESET
// after RST, io.EOF after FIN), the server forgets the client, and a new
// call fails at once, retry-safe.
func TestCutConnectionEndsEveryPendingCall(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, mode := range []faultproxy.CutMode{faultproxy.RST, faultproxy.FIN} {
			t.Run(mode.String(), func(t *testing.T) {
				var worst time.Duration
				for _, who := range []string{clientCallsServer, serverCallsClient, callbackInHandler} {
					t.Run(who, func(t *testing.T) {
						for _, kind := range callKinds {
							t.Run(kind, func(t *testing.T) {
								lag := cutMidCall(t, tr, mode, who, kind)
								t.Logf("everything ended within %v of the cut", lag)
								worst = max(worst, lag)
							})
						}
					})
				}
				t.Logf("%v/%v: the slowest case ended %v after the cut", tr, mode, worst)
			})
		}
	})
}

// cutMidCall runs one case of TestCutConnectionEndsEveryPendingCall and
// returns how long after the cut its last call or handler ended.
func cutMidCall(t *testing.T, tr mux.Transport, mode faultproxy.CutMode, who, kind string) time.Duration {
	ctx := testCtx(t, 20*time.Second)
	atServer, atClient, r := newWaiter(), newWaiter(), newRelay()
	srv := NewServer(muxOpt(tr))
	if who == callbackInHandler {
		srv.RegisterService(&echoDesc, r)
	} else {
		srv.RegisterService(&echoDesc, atServer)
	}
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, atClient)
	px := proxyTo(t, serve(t, srv))
	client := dial(t, px.Addr(), WithServices(callbacks), muxOpt(tr))
	server := onlyPeer(t, srv)

	caller, callee := client, atServer
	switch who {
	case serverCallsClient:
		caller, callee = server, atClient
	case callbackInHandler:
		callee = atClient
	}
	call := timed(func() error { return blockedCall(ctx, caller, kind) })
	await(t, callee.started, 5*time.Second, "the handler to start")

	cut := time.Now()
	px.Cut(mode, faultproxy.Both)
	var worst time.Duration
	check := func(what string, at time.Time) {
		t.Helper()
		lag := at.Sub(cut)
		worst = max(worst, lag)
		if lag > cutBound {
			t.Errorf("%s ended %v after the cut", what, lag)
		}
	}
	wantUnavailable := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: got %v, want Unavailable", what, err)
		}
		if errors.Is(err, io.EOF) {
			t.Errorf("%s: errors.Is(%v, io.EOF) holds: a Recv loop would take the cut for the stream's end", what, err)
		}
	}

	c := await(t, call, 5*time.Second, "the call to fail")
	check("the call", c.at)
	wantUnavailable("the call", c.err)
	e := await(t, callee.ended, 5*time.Second, "the handler's context to end")
	if e.err == nil {
		t.Errorf("%s: the handler's context never ended", e.method)
	}
	check("the handler's context", e.at)
	if who == callbackInHandler {
		err := await(t, r.backErr, 5*time.Second, "the server's call back to fail")
		wantUnavailable("the server's call back", err)
		e := await(t, r.ended, 5*time.Second, "the calling back handler's context to end")
		if e.err == nil {
			t.Errorf("%s: the calling back handler's context never ended", e.method)
		}
		check("the calling back handler's context", e.at)
	}
	for _, p := range []struct {
		name string
		p    *Peer
	}{{"the client's session", client}, {"the server's session", server}} {
		await(t, p.p.Done(), 5*time.Second, p.name+" to end")
		check(p.name, time.Now())
	}
	// The cut reached each side as the proxy made it.
	for _, err := range []error{client.Err(), server.Err()} {
		if mode == faultproxy.RST && !errors.Is(err, syscall.ECONNRESET) || mode == faultproxy.FIN && !errors.Is(err, io.EOF) {
			t.Errorf("a session ended with %v after a %v cut", err, mode)
		}
	}
	eventually(t, 5*time.Second, "the server to forget the peer", func() bool { return len(srv.Peers()) == 0 })

	before := time.Now()
	_, err := echoClient{client}.Unary(ctx, wrapperspb.String("after"))
	if status.Code(err) != codes.Unavailable || !IsRetrySafe(err) || time.Since(before) > time.Second {
		t.Errorf("a call after the cut: got %v (retry-safe %v) after %v, want Unavailable and retry-safe at once",
			err, IsRetrySafe(err), time.Since(before))
	}
	return worst
}

// TestCutMidTransferIsUnavailable cuts the connection, with RST and with
// FIN, while a bidi call streams 16 KiB messages both ways as fast as it
// can, made by the client and by the server: the cut falls inside
// messages, and neither side may take a truncated message or the lost
// connection for a stream's end. The caller's Recv fails with
// Unavailable within 2 s of the cut (not io.EOF, not Internal), its Send
// loop stops, and the handler's context ends.
func TestCutMidTransferIsUnavailable(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, mode := range []faultproxy.CutMode{faultproxy.RST, faultproxy.FIN} {
			for _, who := range []string{clientCallsServer, serverCallsClient} {
				t.Run(mode.String()+"/"+who, func(t *testing.T) { cutMidTransfer(t, tr, mode, who) })
			}
		}
	})
}

func cutMidTransfer(t *testing.T, tr mux.Transport, mode faultproxy.CutMode, who string) {
	ctx := testCtx(t, 20*time.Second)
	ended := make(chan ctxEnd, 1)
	echo := &funcEcho{bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
		err := defaultEcho.Bidi(s)
		select {
		case <-s.Context().Done():
			ended <- ctxEnd{at: time.Now(), err: s.Context().Err()}
		case <-time.After(10 * time.Second):
			ended <- ctxEnd{at: time.Now()}
		}
		return err
	}}
	srv := NewServer(muxOpt(tr))
	srv.RegisterService(&echoDesc, echo)
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, echo)
	px := proxyTo(t, serve(t, srv))
	caller := dial(t, px.Addr(), WithServices(callbacks), muxOpt(tr))
	if who == serverCallsClient {
		caller = onlyPeer(t, srv)
	}

	bs, err := echoClient{caller}.Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := wrapperspb.String(payload(3, 16<<10))
	sending := async(func() error {
		for {
			if err := bs.Send(msg); err != nil {
				return err
			}
		}
	})
	const before = 20 // answers before the cut
	var cut time.Time
	for i := 0; ; i++ {
		m, err := bs.Recv()
		if err != nil {
			if i <= before {
				t.Fatalf("the stream failed after %d answers, before the cut: %v", i, err)
			}
			if lag := time.Since(cut); lag > cutBound {
				t.Errorf("Recv failed %v after the cut", lag)
			}
			if status.Code(err) != codes.Unavailable || errors.Is(err, io.EOF) {
				t.Errorf("Recv after %d answers and the cut: got %v, want Unavailable", i, err)
			}
			t.Logf("Recv failed %v after the cut, %d answers in: %v", time.Since(cut), i, err)
			break
		}
		if m.Value != "server:"+msg.Value {
			t.Fatalf("answer %d is %d bytes, not the echo", i, len(m.Value))
		}
		if i == before {
			cut = time.Now()
			px.Cut(mode, faultproxy.Both)
		}
	}
	await(t, sending, 5*time.Second, "the Send loop to stop")
	e := await(t, ended, 5*time.Second, "the handler to return")
	if lag := e.at.Sub(cut); e.err == nil || lag > cutBound {
		t.Errorf("the handler's context ended %v after the cut (%v)", lag, e.err)
	}
}
