package rpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// BenchmarkServerToAgents measures unary calls (a 64-byte request and
// response) from a server to 1,000 agents, each on a session of its own:
// round robin through a Fleet, by key through a Fleet with StickyKey
// (1,024 keys in turn, their options made before the loop), and by name
// through Directory.Conn (the names in turn), beside calls over one
// session, through the Peer that OnPeer gives the server. Each runs with
// one caller and with 64; allocations count both ends.
func BenchmarkServerToAgents(b *testing.B) {
	const agents = 1000
	ctx := context.Background()
	req := wrapperspb.String(string(make([]byte, 62)))

	srv, addr := agentServer(b, mux.Native)
	startAgents(b, addr, agents, func(i int) *Server { return agentServices(agentName(i)) })
	dir := srv.Directory()
	fleet := echoClient{dir.Fleet("test.Echo", RoundRobin)}
	keys := make([][]CallOption, 1024)
	for i := range keys {
		keys[i] = []CallOption{StickyKey(fmt.Sprint("key-", i))}
	}
	conns := make([]echoClient, agents)
	for i := range conns {
		conns[i] = echoClient{dir.Conn(agentName(i))}
	}

	onPeer := make(chan *Peer, 1)
	one := NewServer(OnPeer(func(p *Peer) { onPeer <- p }))
	dial(b, serve(b, one), WithServices(agentServices("one")))
	back := echoClient{<-onPeer}

	// The choice alone, without the call: what each way of addressing
	// adds to a call.
	f := dir.Fleet("test.Echo", RoundRobin)
	lo := dir.Fleet("test.Echo", LeastOutstanding)
	for _, c := range []struct {
		name   string
		choose func(i int) *Peer
	}{
		{"choose/fleet=roundrobin", func(int) *Peer { return f.choose(nil) }},
		{"choose/fleet=leastoutstanding", func(int) *Peer { return lo.choose(nil) }},
		{"choose/fleet=sticky", func(i int) *Peer { return f.choose(keys[i%len(keys)]) }},
		{"choose/byname", func(i int) *Peer { return conns[i%agents].cc.(*NamedConn).choose(nil) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if c.choose(i) == nil {
					b.Fatal("no peer chosen")
				}
				i++
			}
		})
	}

	for _, c := range []struct {
		name string
		call func(i int) error
	}{
		{"fleet=roundrobin", func(int) error { _, err := fleet.Unary(ctx, req); return err }},
		{"fleet=sticky", func(i int) error { _, err := fleet.Unary(ctx, req, keys[i%len(keys)]...); return err }},
		{"byname", func(i int) error { _, err := conns[i%agents].Unary(ctx, req); return err }},
		{"onesession", func(int) error { _, err := back.Unary(ctx, req); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for _, callers := range []int{1, 64} {
				b.Run(fmt.Sprint("callers=", callers), func(b *testing.B) {
					b.ReportAllocs()
					runCallers(b, callers, c.call)
				})
			}
		})
	}
}

// runCallers makes b.N calls, the i-th with call(i), over callers
// goroutines.
func runCallers(b *testing.B, callers int, call func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range callers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
				if err := call(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
