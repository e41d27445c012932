package rpc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestReconnectStorm connects 60 agents as Clients, which reconnect by
// themselves within 10 to 100 ms, and for 10 s per transport kills the
// server's side of a random agent's session every
// few milliseconds while eight callers call agents by name
// (Directory.Conn) and by key (a Fleet with StickyKey). Every call ends
// at once with the named agent's answer (any agent's, by key) or with
// Unavailable: never another agent's answer, never another code, never a
// hang. Once the storm is over and the agents have reconnected, the
// Directory lists each agent exactly once and nothing else, the Fleet has
// them all, each answers by name, and once the Server and the agents
// stop no goroutine is left.
func TestReconnectStorm(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		reconnectStorm(t, tr, 60, 10*time.Second)
	})
}

func reconnectStorm(t *testing.T, tr mux.Transport, agents int, storm time.Duration) {
	auth := &tokenAuth{}
	srv := NewServer(muxOpt(tr), WithAuthenticator(auth.authenticate))
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := async(func() error { return srv.Serve(ln) })
	defer func() {
		srv.Stop()
		<-served
	}()

	names := make([]string, agents)
	clients := make([]*Client, agents)
	for i := range agents {
		names[i] = agentName(i)
		cl, err := NewClient(ln.Addr().String(), muxOpt(tr), agentCredentials(names[i], ""), WithServices(agentServices(names[i])),
			WithConnectParams(ConnectParams{Backoff: backoffConfig(10*time.Millisecond, 100*time.Millisecond), MinConnectTimeout: 2 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = cl
		cl.Connect()
	}
	defer func() {
		var wg sync.WaitGroup
		for _, cl := range clients {
			wg.Go(func() { cl.Close() })
		}
		wg.Wait()
	}()
	dir := srv.Directory()
	fleet := dir.Fleet("test.Echo", RoundRobin)
	settled := func() bool {
		if !slices.Equal(dir.Names(), names) || fleet.Len() != agents {
			return false
		}
		for _, name := range names {
			if len(dir.Lookup(name)) != 1 {
				return false
			}
		}
		return true
	}
	eventually(t, 20*time.Second, "every agent to connect", settled)

	ctx := testCtx(t, storm+60*time.Second)
	end := time.Now().Add(storm)
	var kills, ok, unavailable atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for time.Now().Before(end) {
			if peers := dir.Lookup(names[rand.IntN(agents)]); len(peers) > 0 {
				peers[0].Session().Kill()
				kills.Add(1)
			}
			time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
		}
	})
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(end) && !t.Failed() {
				name := names[rand.IntN(agents)]
				cc, opts := ClientConnInterface(dir.Conn(name)), []CallOption(nil)
				if rand.IntN(2) == 0 {
					cc, opts = fleet, []CallOption{StickyKey(fmt.Sprint("key-", rand.IntN(100)))}
				}
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				start := time.Now()
				out, err := echoClient{cc}.Unary(callCtx, wrapperspb.String("ping"), opts...)
				cancel()
				took := time.Since(start)
				switch {
				case took > 2*time.Second:
					t.Errorf("a call took %v (%v)", took, err)
				case err != nil && status.Code(err) != codes.Unavailable:
					t.Errorf("a call failed with %v, want Unavailable", err)
				case err != nil:
					unavailable.Add(1)
				case opts == nil && out.Value != name+":ping":
					t.Errorf("a call to %s was answered %q", name, out.Value)
				case opts != nil && !slices.Contains(names, echoedBy(t, out)):
					t.Errorf("a call by key was answered %q", out.Value)
				default:
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%v: %d sessions killed; %d calls answered, %d Unavailable", storm, kills.Load(), ok.Load(), unavailable.Load())
	if ok.Load() < 10*unavailable.Load() || kills.Load() < 50 {
		t.Errorf("the storm had %d kills, %d calls answered and %d Unavailable: want many kills and most calls answered", kills.Load(), ok.Load(), unavailable.Load())
	}

	eventually(t, 20*time.Second, "the agents to reconnect, one session each", settled)
	for _, name := range names {
		checkEcho(t, ctx, dir.Conn(name), name)
	}
}
