package rpc

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// agentServer serves test.Echo as "server" to agents that tokenAuth
// admits, on transport tr, with opts; it returns the Server and its
// address.
func agentServer(t testing.TB, tr mux.Transport, opts ...ServerOption) (*Server, string) {
	t.Helper()
	auth := &tokenAuth{}
	srv := NewServer(append([]ServerOption{muxOpt(tr), WithAuthenticator(auth.authenticate)}, opts...)...)
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	return srv, serve(t, srv)
}

// dialAgent connects the agent id, whose test.Echo answers "answer:...",
// to srv at addr; it is listed in srv's Directory once Dial returns. It
// is closed when the test ends.
func dialAgent(t testing.TB, srv *Server, addr string, tr mux.Transport, id, answer string) *Peer {
	t.Helper()
	return dial(t, addr, muxOpt(tr), agentCredentials(id, ""), WithServices(agentServices(answer)))
}

// echoedBy returns who answered a test.Echo call: the part of its reply
// before ":ping".
func echoedBy(t testing.TB, out *wrapperspb.StringValue) string {
	t.Helper()
	who, ok := strings.CutSuffix(out.GetValue(), ":ping")
	if !ok {
		t.Fatalf("reply %q is no echo of ping", out.GetValue())
	}
	return who
}

// TestNamedConnCallsAgentByName calls agents through Directory.Conn:
// unary and streaming calls reach the agent of the name; a name no agent
// has fails at once with Unavailable; with WaitForReady the call waits
// for the agent to connect, or for its context to end; and an agent that
// reconnects is reached through the same NamedConn, which fails fast
// while it is away.
func TestNamedConnCallsAgentByName(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv, addr := agentServer(t, tr)
		dir := srv.Directory()
		for _, id := range []string{"a1", "a2", "a3"} {
			dialAgent(t, srv, addr, tr, id, id)
		}
		a2 := dir.Conn("a2")
		if a2.Name() != "a2" {
			t.Errorf("Name() = %q", a2.Name())
		}
		checkEcho(t, ctx, a2, "a2")
		checkEcho(t, ctx, dir.Conn("a3"), "a3")
		s, err := echoClient{a2}.ServerStream(ctx, wrapperspb.String("x"))
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil || m.Value != "a2:x" {
				t.Fatalf("a2's stream: %q, %v", m.GetValue(), err)
			}
		}

		start := time.Now()
		_, err = echoClient{dir.Conn("nobody")}.Unary(ctx, wrapperspb.String("ping"))
		wantStatus(t, err, codes.Unavailable, `no peer named "nobody" is connected`)
		if d := time.Since(start); d > time.Second {
			t.Errorf("a call to nobody failed after %v, want at once", d)
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err = echoClient{dir.Conn("nobody")}.Unary(short, wrapperspb.String("ping"), WaitForReady(true))
		cancel()
		wantStatus(t, err, codes.DeadlineExceeded, `waiting for a peer named "nobody"`)

		late := async(func() error {
			out, err := echoClient{dir.Conn("late")}.Unary(ctx, wrapperspb.String("ping"), WaitForReady(true))
			if err != nil {
				return err
			}
			if out.Value != "late:ping" {
				return fmt.Errorf("got %q", out.Value)
			}
			return nil
		})
		select {
		case err := <-late:
			t.Fatalf("a call waiting for late returned before it connected: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		dialAgent(t, srv, addr, tr, "late", "late")
		if err := await(t, late, 5*time.Second, "the call waiting for late"); err != nil {
			t.Errorf("the call waiting for late: %v", err)
		}

		dir.Lookup("a2")[0].Session().Kill()
		eventually(t, 5*time.Second, "a2 to leave", func() bool { return len(dir.Lookup("a2")) == 0 })
		_, err = echoClient{a2}.Unary(ctx, wrapperspb.String("ping"))
		wantStatus(t, err, codes.Unavailable, `no peer named "a2"`)
		dialAgent(t, srv, addr, tr, "a2", "a2-again")
		checkEcho(t, ctx, a2, "a2-again")
	})
}

// TestDirectoryCallsRunClientInterceptorsOnce gives the Server client
// interceptors: a unary and a streaming call through a NamedConn and
// through a Fleet each run them once, with the NamedConn or the Fleet as
// their ClientConnInterface, and the Peer's own calls run them once too.
func TestDirectoryCallsRunClientInterceptorsOnce(t *testing.T) {
	var unary, stream atomic.Int64
	var lastCC atomic.Value
	srv, addr := agentServer(t, mux.Native,
		ChainUnaryClient(func(ctx context.Context, method string, req, reply any, cc ClientConnInterface, invoker UnaryInvoker, opts ...CallOption) error {
			unary.Add(1)
			lastCC.Store(fmt.Sprintf("%T", cc))
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		ChainStreamClient(func(ctx context.Context, desc *StreamDesc, cc ClientConnInterface, method string, streamer Streamer, opts ...CallOption) (ClientStream, error) {
			stream.Add(1)
			lastCC.Store(fmt.Sprintf("%T", cc))
			return streamer(ctx, desc, cc, method, opts...)
		}))
	ctx := testCtx(t, 20*time.Second)
	dialAgent(t, srv, addr, mux.Native, "a1", "a1")
	fleet := srv.Directory().Fleet("test.Echo", RoundRobin)
	for _, c := range []struct {
		cc     ClientConnInterface
		ccType string
	}{
		{srv.Directory().Conn("a1"), "*rpc.NamedConn"},
		{fleet, "*rpc.Fleet"},
		{srv.Directory().Lookup("a1")[0], "*rpc.Peer"},
	} {
		unary.Store(0)
		stream.Store(0)
		checkEcho(t, ctx, c.cc, "a1")
		if n, cc := unary.Load(), lastCC.Load(); n != 1 || cc != c.ccType {
			t.Errorf("a unary call through %s ran the unary interceptor %d times, last with %v", c.ccType, n, cc)
		}
		s, err := echoClient{c.cc}.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.CloseSend()
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("the bidi call through %s: %v", c.ccType, err)
		}
		if n, cc := stream.Load(), lastCC.Load(); n != 1 || cc != c.ccType {
			t.Errorf("a stream through %s ran the stream interceptor %d times, last with %v", c.ccType, n, cc)
		}
	}
}

// fleetAnswers makes n calls through cc and counts who answered each.
func fleetAnswers(t testing.TB, ctx context.Context, cc ClientConnInterface, n int, opts ...CallOption) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		out, err := echoClient{cc}.Unary(ctx, wrapperspb.String("ping"), opts...)
		if err != nil {
			t.Fatalf("a call to the fleet: %v", err)
		}
		got[echoedBy(t, out)]++
	}
	return got
}

// TestFleetBalances connects four agents that serve test.Echo, a client
// that serves nothing and one that serves another service: the Fleet of
// test.Echo has the four, by name; RoundRobin spreads 400 calls evenly
// over them, and PickFirst sends every call to the oldest, then to the
// next oldest once it leaves.
func TestFleetBalances(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv, addr := agentServer(t, tr)
		dir := srv.Directory()
		for _, id := range []string{"a3", "a1", "a4", "a2"} {
			dialAgent(t, srv, addr, tr, id, id)
		}
		dial(t, addr, muxOpt(tr), agentCredentials("plain", ""))
		other := NewServer()
		other.RegisterService(&ServiceDesc{ServiceName: "test.Other", HandlerType: (*any)(nil)}, struct{}{})
		dial(t, addr, muxOpt(tr), agentCredentials("other", ""), WithServices(other))

		fleet := dir.Fleet("test.Echo", RoundRobin)
		if fleet.Len() != 4 || fleet.Service() != "test.Echo" {
			t.Fatalf("the fleet of %s has %d members, want 4", fleet.Service(), fleet.Len())
		}
		var names []string
		for _, p := range fleet.Peers() {
			names = append(names, p.Identity().Name)
		}
		if !slices.Equal(names, []string{"a1", "a2", "a3", "a4"}) {
			t.Errorf("Peers() are %q, want a1 to a4 in order", names)
		}
		if got := fleetAnswers(t, ctx, fleet, 400); len(got) != 4 || got["a1"] != 100 || got["a2"] != 100 || got["a3"] != 100 || got["a4"] != 100 {
			t.Errorf("RoundRobin over 400 calls: %v, want 100 each of a1 to a4", got)
		}

		first := dir.Fleet("test.Echo", PickFirst)
		if got := fleetAnswers(t, ctx, first, 20); got["a3"] != 20 {
			t.Errorf("PickFirst: %v, want all to a3, the oldest", got)
		}
		dir.Lookup("a3")[0].Session().Kill()
		if got := fleetAnswers(t, ctx, first, 20); got["a1"] != 20 {
			t.Errorf("PickFirst once a3 went away: %v, want all to a1, the next oldest", got)
		}
		eventually(t, 5*time.Second, "a3 to leave the fleet", func() bool { return fleet.Len() == 3 })
	})
}

// TestFleetLeastOutstanding holds five calls in flight to one of two
// members: LeastOutstanding sends every other call to the idle one, and
// spreads them over both once the busy one is idle too.
func TestFleetLeastOutstanding(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srv, addr := agentServer(t, mux.Native)
	dir := srv.Directory()
	dialAgent(t, srv, addr, mux.Native, "busy", "busy")
	dialAgent(t, srv, addr, mux.Native, "idle", "idle")
	fleet := dir.Fleet("test.Echo", LeastOutstanding)
	busy := dir.Lookup("busy")[0]
	held, release := context.WithCancel(ctx)
	var blocked []<-chan error
	for range 5 {
		blocked = append(blocked, async(func() error {
			_, err := echoClient{busy}.Unary(held, wrapperspb.String("wait"))
			return err
		}))
	}
	eventually(t, 5*time.Second, "the busy member's calls", func() bool { return busy.outgoing.Load() == 5 })
	if got := fleetAnswers(t, ctx, fleet, 100); got["idle"] != 100 {
		t.Errorf("LeastOutstanding with busy holding 5 calls: %v, want all 100 to idle", got)
	}
	release()
	for _, errc := range blocked {
		if err := await(t, errc, 5*time.Second, "a held call"); status.Code(err) != codes.Canceled {
			t.Errorf("a held call: %v, want Canceled", err)
		}
	}
	eventually(t, 5*time.Second, "busy to be idle", func() bool { return busy.outgoing.Load() == 0 })
	if got := fleetAnswers(t, ctx, fleet, 200); got["busy"] < 20 || got["idle"] < 20 {
		t.Errorf("LeastOutstanding over two idle members: %v, want both used", got)
	}
}

// stickyOwners calls the fleet twice per key of keys with StickyKey, and
// returns who answered each key.
func stickyOwners(t testing.TB, ctx context.Context, fleet *Fleet, keys []string) map[string]string {
	t.Helper()
	owners := map[string]string{}
	for _, k := range keys {
		for range 2 {
			out, err := echoClient{fleet}.Unary(ctx, wrapperspb.String("ping"), StickyKey(k))
			if err != nil {
				t.Fatalf("a call with key %s: %v", k, err)
			}
			who := echoedBy(t, out)
			if prev, ok := owners[k]; ok && prev != who {
				t.Fatalf("key %s went to %s and then to %s with no member leaving", k, prev, who)
			}
			owners[k] = who
		}
	}
	return owners
}

// TestFleetStickyKey calls ten agents with 300 keys under each balancer:
// each key goes to one member, every time, and the keys spread over all
// of them. When a member leaves, its keys move to the others, and no
// other key moves; when it comes back, it takes back exactly its keys;
// a new member takes over some keys, and no other key moves.
// Streaming calls with a key go where unary ones do.
func TestFleetStickyKey(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		srv, addr := agentServer(t, tr)
		dir := srv.Directory()
		agents := map[string]*Peer{}
		for i := range 10 {
			id := fmt.Sprint("agent", i)
			agents[id] = dialAgent(t, srv, addr, tr, id, id)
		}
		var keys []string
		for i := range 300 {
			keys = append(keys, fmt.Sprint("key-", i))
		}
		fleet := dir.Fleet("test.Echo", RoundRobin)
		owners := stickyOwners(t, ctx, fleet, keys)
		held := map[string]int{}
		for _, who := range owners {
			held[who]++
		}
		if len(held) != 10 {
			t.Fatalf("300 keys went to %d of 10 members: %v", len(held), held)
		}
		for _, b := range []Balancer{PickFirst, LeastOutstanding} {
			if again := stickyOwners(t, ctx, dir.Fleet("test.Echo", b), keys); !maps.Equal(again, owners) {
				t.Errorf("under %v the keys went elsewhere than under RoundRobin", b)
			}
		}
		s, err := echoClient{fleet}.ServerStream(ctx, wrapperspb.String("ping"), StickyKey(keys[0]))
		if err != nil {
			t.Fatal(err)
		}
		if m, err := s.Recv(); err != nil || echoedBy(t, m) != owners[keys[0]] {
			t.Errorf("a stream with key %s: %q, %v; want it answered by %s", keys[0], m.GetValue(), err, owners[keys[0]])
		}

		leaving := owners[keys[0]]
		agents[leaving].Close()
		eventually(t, 5*time.Second, leaving+" to leave the fleet", func() bool { return fleet.Len() == 9 })
		after := stickyOwners(t, ctx, fleet, keys)
		for _, k := range keys {
			switch {
			case owners[k] == leaving && after[k] == leaving:
				t.Fatalf("key %s still went to %s, which left", k, leaving)
			case owners[k] != leaving && after[k] != owners[k]:
				t.Errorf("key %s moved from %s to %s when %s left", k, owners[k], after[k], leaving)
			}
		}

		dialAgent(t, srv, addr, tr, leaving, leaving)
		if back := stickyOwners(t, ctx, fleet, keys); !maps.Equal(back, owners) {
			t.Errorf("once %s came back, the keys are not where they were before it left", leaving)
		}

		dialAgent(t, srv, addr, tr, "newcomer", "newcomer")
		taken := 0
		for k, who := range stickyOwners(t, ctx, fleet, keys) {
			switch {
			case who == "newcomer":
				taken++
			case who != owners[k]:
				t.Errorf("key %s moved from %s to %s when newcomer joined", k, owners[k], who)
			}
		}
		if taken == 0 || taken > 60 {
			t.Errorf("newcomer, joining 10 members, took %d of 300 keys; want about 27", taken)
		}
	})
}

// TestFleetWithoutMembers calls the fleet of a service no peer serves:
// at once Unavailable; with WaitForReady the call waits until an agent
// serving it connects, and then reaches it.
func TestFleetWithoutMembers(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv, addr := agentServer(t, tr)
		dial(t, addr, muxOpt(tr), agentCredentials("plain", ""))
		fleet := srv.Directory().Fleet("test.Echo", RoundRobin)
		if n := fleet.Len(); n != 0 || len(fleet.Peers()) != 0 {
			t.Fatalf("the fleet has %d members, want none", n)
		}
		start := time.Now()
		_, err := echoClient{fleet}.Unary(ctx, wrapperspb.String("ping"), StickyKey("k"))
		wantStatus(t, err, codes.Unavailable, "no peer serving test.Echo is connected")
		_, err = echoClient{fleet}.Bidi(ctx)
		wantStatus(t, err, codes.Unavailable, "no peer serving test.Echo is connected")
		if d := time.Since(start); d > time.Second {
			t.Errorf("calls to an empty fleet failed after %v, want at once", d)
		}
		waited := async(func() error {
			out, err := echoClient{fleet}.Unary(ctx, wrapperspb.String("ping"), WaitForReady(true))
			if err == nil && out.Value != "a1:ping" {
				err = fmt.Errorf("got %q", out.Value)
			}
			return err
		})
		select {
		case err := <-waited:
			t.Fatalf("a call waiting for a member returned before one joined: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		dialAgent(t, srv, addr, tr, "a1", "a1")
		if err := await(t, waited, 5*time.Second, "the call waiting for a member"); err != nil {
			t.Errorf("the call waiting for a member: %v", err)
		}
	})
}

// stubRoute is a route whose choices a test makes: the peers of picks
// in turn, the last one over and over.
type stubRoute struct {
	d     *Directory
	picks []*Peer
	asked atomic.Int64
}

func (r *stubRoute) directory() *Directory { return r.d }
func (r *stubRoute) describe() string      { return "stub" }
func (r *stubRoute) choose([]CallOption) *Peer {
	n := int(r.asked.Add(1))
	return r.picks[min(n, len(r.picks))-1]
}

// TestDirectoryCallsMoveOnlyUnprocessed sends calls through routes whose
// first choice is a session that has ended: the call goes to the next
// choice, a live session, and is answered there; through a route that
// offers only ended sessions, it gives up after maxMoves more choices
// with Unavailable. A call whose session ends while its handler runs
// may have done its work: it fails with Unavailable and is not sent
// again.
func TestDirectoryCallsMoveOnlyUnprocessed(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	started := make(chan struct{}, 1)
	slow := NewServer()
	slow.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	srv, addr := agentServer(t, mux.Native)
	dir := srv.Directory()
	dialAgent(t, srv, addr, mux.Native, "gone", "gone")
	dialAgent(t, srv, addr, mux.Native, "live", "live")
	dial(t, addr, agentCredentials("slow", ""), WithServices(slow))
	gone, live, busy := dir.Lookup("gone")[0], dir.Lookup("live")[0], dir.Lookup("slow")[0]
	gone.Session().Kill()

	moved := &stubRoute{d: dir, picks: []*Peer{gone, live}}
	out, err := echoClient{conn(moved)}.Unary(ctx, wrapperspb.String("ping"))
	if err != nil || out.Value != "live:ping" || moved.asked.Load() != 2 {
		t.Errorf("a call whose first session had ended: %q, %v after %d choices; want live's answer after 2", out.GetValue(), err, moved.asked.Load())
	}
	s, err := echoClient{conn(&stubRoute{d: dir, picks: []*Peer{gone, live}})}.ServerStream(ctx, wrapperspb.String("ping"))
	if err == nil {
		var m *wrapperspb.StringValue
		m, err = s.Recv()
		if err == nil && m.Value != "live:ping" {
			t.Errorf("a stream whose first session had ended was answered %q", m.Value)
		}
	}
	if err != nil {
		t.Errorf("a stream whose first session had ended: %v", err)
	}

	stuck := &stubRoute{d: dir, picks: []*Peer{gone}}
	_, err = echoClient{conn(stuck)}.Unary(ctx, wrapperspb.String("ping"))
	if status.Code(err) != codes.Unavailable || stuck.asked.Load() != 1+maxMoves {
		t.Errorf("a call offered only an ended session: %v after %d choices; want Unavailable after %d", err, stuck.asked.Load(), 1+maxMoves)
	}

	ran := &stubRoute{d: dir, picks: []*Peer{busy, live}}
	errc := async(func() error {
		_, err := echoClient{conn(ran)}.Unary(ctx, wrapperspb.String("ping"))
		return err
	})
	await(t, started, 5*time.Second, "the slow handler")
	busy.Session().Kill()
	err = await(t, errc, 5*time.Second, "the call whose session ended under its handler")
	if status.Code(err) != codes.Unavailable || IsRetrySafe(err) || ran.asked.Load() != 1 {
		t.Errorf("a call whose session ended while it ran: %v after %d choices; want Unavailable, not retry-safe, after 1", err, ran.asked.Load())
	}
}

// conn makes a route a ClientConnInterface, as NamedConn and Fleet are.
func conn(r route) ClientConnInterface { return routeConn{r} }

type routeConn struct{ r route }

func (c routeConn) Invoke(ctx context.Context, method string, req, reply any, opts ...CallOption) error {
	return invokeOn(ctx, c.r, method, req, reply, opts)
}

func (c routeConn) NewStream(ctx context.Context, desc *StreamDesc, method string, opts ...CallOption) (ClientStream, error) {
	return newStreamOn(ctx, c.r, desc, method, opts)
}

// TestFleetChoosesWithoutAllocating chooses members of a fleet of 20 by
// each balancer and by key: no choice allocates.
func TestFleetChoosesWithoutAllocating(t *testing.T) {
	srv, addr := agentServer(t, mux.Native)
	for i := range 20 {
		dialAgent(t, srv, addr, mux.Native, agentName(i), agentName(i))
	}
	byKey := []CallOption{StickyKey("k")}
	for _, b := range []Balancer{PickFirst, RoundRobin, LeastOutstanding} {
		f := srv.Directory().Fleet("test.Echo", b)
		for _, opts := range [][]CallOption{nil, byKey} {
			if n := testing.AllocsPerRun(1000, func() { f.choose(opts) }); n != 0 {
				t.Errorf("%v with options %v: %v allocations per choice", b, opts, n)
			}
		}
	}
}
