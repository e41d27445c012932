package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
)

// agentServices is a callback server for an agent named name: its
// test.Echo answers "name:...".
func agentServices(name string) *Server {
	srv := NewServer()
	srv.RegisterService(&echoDesc, &echoImpl{name: name})
	return srv
}

// listed waits until dir lists exactly one peer under name, other than
// not, and returns it. A Dial returns once the server has sent its
// welcome, a moment before the server lists the peer.
func listed(t testing.TB, dir *Directory, name string, not *Peer) *Peer {
	t.Helper()
	var p *Peer
	eventually(t, 5*time.Second, "the directory to list "+name, func() bool {
		peers := dir.Lookup(name)
		if len(peers) == 1 && peers[0] != not {
			p = peers[0]
			return true
		}
		return false
	})
	return p
}

// nextEvent returns the next event of a Watch, within 5 s.
func nextEvent(t testing.TB, events <-chan DirectoryEvent) DirectoryEvent {
	t.Helper()
	return await(t, events, 5*time.Second, "a directory event")
}

// TestDirectoryListsAdmittedPeersByName connects agents with identities
// and an anonymous one: Lookup finds each by name, the server calls it
// back through the Peer found, Watch gives the peers present and then
// every join and leave in order, and an agent that goes away leaves the
// Directory. Two sessions of one name are both listed, the newest first,
// under KeepAll.
func TestDirectoryListsAdmittedPeersByName(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		auth := &tokenAuth{}
		srv := NewServer(muxOpt(tr), WithAuthenticator(func(ctx context.Context, h *SessionHello) (Identity, error) {
			if len(h.Metadata.Get("agent-id")) == 0 {
				return Identity{}, nil // anonymous
			}
			return auth.authenticate(ctx, h)
		}))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		dir := srv.Directory()
		a1 := dial(t, addr, muxOpt(tr), agentCredentials("a1", ""), WithServices(agentServices("a1")))
		events := dir.Watch(ctx)
		if e := nextEvent(t, events); e.Name != "a1" || !e.Joined {
			t.Fatalf("the first event: %+v, want a1 present", e)
		}
		dial(t, addr, muxOpt(tr), agentCredentials("a2", ""), WithServices(agentServices("a2")))
		if e := nextEvent(t, events); e.Name != "a2" || !e.Joined {
			t.Fatalf("event %+v, want a2 joining", e)
		}
		dial(t, addr, muxOpt(tr)) // anonymous: not listed
		if got := dir.Names(); !slices.Equal(got, []string{"a1", "a2"}) {
			t.Errorf("Names() = %q", got)
		}
		for _, name := range []string{"a1", "a2"} {
			peers := dir.Lookup(name)
			if len(peers) != 1 {
				t.Fatalf("Lookup(%s) = %d peers", name, len(peers))
			}
			checkEcho(t, ctx, peers[0], name)
		}

		again := dial(t, addr, muxOpt(tr), agentCredentials("a1", ""), WithServices(agentServices("a1-again")))
		if e := nextEvent(t, events); e.Name != "a1" || !e.Joined {
			t.Fatalf("event %+v, want a1's second session joining", e)
		}
		peers := dir.Lookup("a1")
		if len(peers) != 2 {
			t.Fatalf("Lookup(a1) = %d peers, want both sessions", len(peers))
		}
		checkEcho(t, ctx, peers[0], "a1-again")
		again.Close()
		if e := nextEvent(t, events); e.Name != "a1" || e.Joined || e.Peer != peers[0] {
			t.Fatalf("event %+v, want a1's second session leaving", e)
		}
		a1.Close()
		if e := nextEvent(t, events); e.Name != "a1" || e.Joined {
			t.Fatalf("event %+v, want a1 leaving", e)
		}
		if got := dir.Names(); !slices.Equal(got, []string{"a2"}) {
			t.Errorf("Names() after a1 left = %q", got)
		}
		if n := len(dir.Lookup("a1")); n != 0 {
			t.Errorf("Lookup(a1) after it left: %d peers", n)
		}
	})
}

// TestDirectoryReplaceOldest connects an agent twice under ReplaceOldest:
// the first session leaves the Directory when the second is admitted and
// is shut down with a GoAway "replaced by a newer session"; the Directory
// then holds the second alone, and calls by name reach it.
func TestDirectoryReplaceOldest(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		auth := &tokenAuth{}
		srv := NewServer(muxOpt(tr), WithAuthenticator(auth.authenticate), DuplicateIdentities(ReplaceOldest))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		first := dial(t, addr, muxOpt(tr), agentCredentials("a1", ""), WithServices(agentServices("first")))
		old := listed(t, srv.Directory(), "a1", nil)
		second := dial(t, addr, muxOpt(tr), agentCredentials("a1", ""), WithServices(agentServices("second")))
		peers := []*Peer{listed(t, srv.Directory(), "a1", old)}
		checkEcho(t, ctx, peers[0], "second")
		select {
		case <-first.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the replaced session still runs 5 s later")
		}
		var g *mux.GoAwayError
		if tr == mux.Native && (!errors.As(first.Err(), &g) || string(g.Debug) != "replaced by a newer session") {
			t.Errorf("the replaced session ended with %v, want the GoAway", first.Err())
		}
		checkEcho(t, ctx, second, "server")
		if n := len(srv.Directory().Lookup("a1")); n != 1 {
			t.Errorf("Lookup(a1) at the end: %d peers", n)
		}
	})
}

// TestDirectoryListsSessionOnceDialReturns dials agents one after
// another and looks each up the moment its Dial returns: the server has
// admitted the session before its welcome left, so the Directory and
// Server.Peers list it already.
func TestDirectoryListsSessionOnceDialReturns(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		auth := &tokenAuth{}
		srv := NewServer(muxOpt(tr), WithAuthenticator(auth.authenticate))
		addr := serve(t, srv)
		for i := range 50 {
			name := fmt.Sprint("a", i)
			p := dial(t, addr, muxOpt(tr), agentCredentials(name, ""))
			if n := len(srv.Directory().Lookup(name)); n != 1 {
				t.Fatalf("Lookup(%s) = %d peers the moment its Dial returned", name, n)
			}
			if n := len(srv.Peers()); n != 1 {
				t.Fatalf("Peers() = %d peers the moment %s's Dial returned, want it alone", n, name)
			}
			p.Close()
			eventually(t, 5*time.Second, name+" to leave", func() bool { return len(srv.Peers()) == 0 })
		}
	})
}
