package rpc

import (
	"errors"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc/internal/faultproxy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// keepAliveBounds returns how soon, and how late, after a link goes
// quiet keepalive may end a session: it looks every quarter interval and
// gives up a timeout after it last heard from the peer, which an idle
// session did at most an interval and a quarter before. The slack is for
// a busy machine.
func keepAliveBounds() (least, most time.Duration) {
	return kaTimeout - 2*kaInterval, kaInterval + kaTimeout + time.Second
}

// How a side of a session learns that the link under it broke.
type learns uint8

const (
	atOnce    learns = iota + 1 // the fault reaches it as a reset or an end of file
	silenced                    // it hears nothing more: only keepalive can tell
	afterPeer                   // it still hears its peer, until the peer's keepalive gives up and closes
)

// A deadLink is a fault that leaves at least one side of a session
// talking to a connection that has gone quiet, and how each side learns
// of it, by side: client, server.
type deadLink struct {
	name  string
	fault func(*faultproxy.Proxy)
	how   [2]learns
}

var deadLinks = []deadLink{
	{"silentBothWays", func(p *faultproxy.Proxy) { p.Silence(faultproxy.Both, true) }, [2]learns{silenced, silenced}},
	{"silentToClient", func(p *faultproxy.Proxy) { p.Silence(faultproxy.ToClient, true) }, [2]learns{silenced, afterPeer}},
	{"silentToServer", func(p *faultproxy.Proxy) { p.Silence(faultproxy.ToTarget, true) }, [2]learns{afterPeer, silenced}},
	{"RSTToServerOnly", func(p *faultproxy.Proxy) { p.Cut(faultproxy.RST, faultproxy.ToTarget) }, [2]learns{silenced, atOnce}},
	{"FINToServerOnly", func(p *faultproxy.Proxy) { p.Cut(faultproxy.FIN, faultproxy.ToTarget) }, [2]learns{silenced, atOnce}},
	{"RSTToClientOnly", func(p *faultproxy.Proxy) { p.Cut(faultproxy.RST, faultproxy.ToClient) }, [2]learns{atOnce, silenced}},
	{"FINToClientOnly", func(p *faultproxy.Proxy) { p.Cut(faultproxy.FIN, faultproxy.ToClient) }, [2]learns{atOnce, silenced}},
}

// TestKeepAliveEndsSessionOverDeadLink breaks the link under a session
// with keepalive (interval 250 ms, timeout 1 s) while calls of every kind
// are blocked in handlers in both directions: the proxy goes silent both
// ways or one way (sockets open, nothing forwarded), or cuts only one
// side's connection with RST or FIN and leaves the other's open and
// quiet, as a middlebox that drops a connection does. Before the fault,
// the idle session outlives two timeouts. After it, a side the fault
// reaches directly ends its session within 2 s, not by keepalive; a side
// that hears nothing more ends it with mux.ErrKeepAliveTimeout between
// timeout-2·interval and interval+timeout+1 s after the fault; a side
// that still hears a silent peer ends within 2 s of that peer. Each
// side's pending calls fail with Unavailable, and its handlers' contexts
// end, within 1 s of its session's end.
func TestKeepAliveEndsSessionOverDeadLink(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, dl := range deadLinks {
			t.Run(dl.name, func(t *testing.T) {
				t.Parallel() // each waits for keepalive, and takes little CPU
				keepAliveOverDeadLink(t, tr, dl)
			})
		}
	})
}

func keepAliveOverDeadLink(t *testing.T, tr mux.Transport, dl deadLink) {
	ctx := testCtx(t, 30*time.Second)
	atServer, atClient := newWaiter(), newWaiter()
	srv := NewServer(keepAliveOpt(tr))
	srv.RegisterService(&echoDesc, atServer)
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, atClient)
	px := proxyTo(t, serve(t, srv))
	client := dial(t, px.Addr(), WithServices(callbacks), keepAliveOpt(tr))
	server := onlyPeer(t, srv)

	// An idle session with a live peer outlives several timeouts.
	time.Sleep(2 * kaTimeout)
	if client.Err() != nil || server.Err() != nil {
		t.Fatalf("an idle session over a live link ended: client %v, server %v", client.Err(), server.Err())
	}

	type side struct {
		name   string
		p      *Peer
		callee *waiter // serves the other side's calls
		calls  []<-chan timedErr
		ended  <-chan time.Time
	}
	sides := [2]*side{{name: "client", p: client, callee: atClient}, {name: "server", p: server, callee: atServer}}
	for _, s := range sides {
		for _, kind := range callKinds {
			s.calls = append(s.calls, timed(func() error { return blockedCall(ctx, s.p, kind) }))
		}
	}
	for _, s := range sides {
		for range callKinds {
			await(t, s.callee.started, 5*time.Second, "a handler to start")
		}
	}

	for _, s := range sides {
		ended := make(chan time.Time, 1)
		go func() {
			select {
			case <-s.p.Done():
				ended <- time.Now()
			case <-ctx.Done():
				close(ended)
			}
		}()
		s.ended = ended
	}
	faulted := time.Now()
	dl.fault(px)
	var end [2]time.Time
	for i, s := range sides {
		at, ok := <-s.ended
		if !ok {
			t.Fatalf("the %s's session outlived the test's context", s.name)
		}
		end[i] = at
	}
	least, most := keepAliveBounds()
	for i, s := range sides {
		after, err := end[i].Sub(faulted), s.p.Err()
		byKeepAlive := errors.Is(err, mux.ErrKeepAliveTimeout)
		switch dl.how[i] {
		case atOnce:
			if after > cutBound || byKeepAlive {
				t.Errorf("the %s, which the fault reached, ended %v after it with %v", s.name, after, err)
			}
			t.Logf("the %s, which the fault reached, ended %v after it", s.name, after)
		case silenced:
			if !byKeepAlive || after < least || after > most {
				t.Errorf("the %s ended %v after the fault with %v, want %v by keepalive, %v to %v after", s.name, after, err, mux.ErrKeepAliveTimeout, least, most)
			}
			t.Logf("the %s's keepalive ended the session %v after the fault", s.name, after)
		case afterPeer:
			lag := end[i].Sub(end[1-i])
			if byKeepAlive || lag > cutBound || lag < -cutBound {
				t.Errorf("the %s, which heard its peer, ended %v after the peer with %v", s.name, lag, err)
			}
			t.Logf("the %s, which heard its peer, ended %v after the peer's keepalive gave up", s.name, lag)
		}
	}
	for i, s := range sides {
		for _, c := range s.calls {
			r := await(t, c, 5*time.Second, "a pending call of the "+s.name+" to fail")
			if status.Code(r.err) != codes.Unavailable {
				t.Errorf("a pending call of the %s: got %v, want Unavailable", s.name, r.err)
			}
			if lag := r.at.Sub(end[i]); lag > time.Second {
				t.Errorf("a pending call of the %s failed %v after its session ended", s.name, lag)
			}
		}
		for range callKinds {
			e := await(t, s.callee.ended, 5*time.Second, "a handler of the "+s.name+" to see its context end")
			if lag := e.at.Sub(end[i]); e.err == nil || lag > time.Second {
				t.Errorf("%s: the %s's handler's context ended %v after its session (%v)", e.method, s.name, lag, e.err)
			}
		}
	}
}
