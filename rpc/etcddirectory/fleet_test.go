package etcddirectory_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/etcddirectory"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The test services, written as generated code would be: test.Agent,
// which agents serve and answer with their id, and test.Hub, which every
// server serves and which calls the agent it is asked for, wherever that
// agent is.

type whoServer interface {
	Who(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

type callServer interface {
	Call(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var agentDesc = rpc.ServiceDesc{
	ServiceName: "test.Agent",
	HandlerType: (*whoServer)(nil),
	Methods: []rpc.MethodDesc{{
		MethodName: "Who",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ rpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(whoServer).Who(ctx, in)
		},
	}},
}

var hubDesc = rpc.ServiceDesc{
	ServiceName: "test.Hub",
	HandlerType: (*callServer)(nil),
	Methods: []rpc.MethodDesc{{
		MethodName: "Call",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ rpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(callServer).Call(ctx, in)
		},
	}},
}

// callHub asks the hub behind cc to call agent name, and returns the
// answer: "<name> via <the server that holds it>".
func callHub(ctx context.Context, cc rpc.ClientConnInterface, name string) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, "/test.Hub/Call", wrapperspb.String(name), out); err != nil {
		return "", err
	}
	return out.Value, nil
}

// agentImpl answers Who with its agent's id.
type agentImpl struct{ id string }

func (a agentImpl) Who(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(a.id), nil
}

// agentAuth admits every session, as the agent its metadata's "agent-id"
// names; a session without one (a hub forwarding a call) is anonymous.
func agentAuth(_ context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
	return rpc.Identity{Name: strings.Join(h.Metadata.Get("agent-id"), "")}, nil
}

// forwardedBy marks a call a hub forwarded, with the forwarding hub's id,
// so that the hub it reaches answers from its own Directory or not at
// all: a call makes one hop at most, and stale keys cannot make it loop.
const forwardedBy = "x-forwarded-by"

// hub is one server of a test's fleet: an rpc.Server whose agents are in
// its Directory, published to etcd by its own etcd client.
type hub struct {
	id   string
	addr string
	srv  *rpc.Server
	cli  *clientv3.Client

	served    chan struct{}
	cancel    context.CancelFunc // ends Publish cleanly
	published chan error         // what Publish returned
	stopOnce  sync.Once

	mu    sync.Mutex
	peers map[string]*rpc.Client // the hubs this one forwards to, by address
}

// startHub serves a hub on loopback, publishing under opts (ServerID and
// Address filled in) through a client of the etcd at endpoint.
func startHub(t *testing.T, endpoint, id string, opts etcddirectory.Options) *hub {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hub{
		id:        id,
		addr:      ln.Addr().String(),
		srv:       rpc.NewServer(rpc.WithAuthenticator(agentAuth)),
		cli:       newEtcdClient(t, endpoint),
		served:    make(chan struct{}),
		published: make(chan error, 1),
		peers:     map[string]*rpc.Client{},
	}
	h.srv.RegisterService(&hubDesc, h)
	go func() {
		defer close(h.served)
		h.srv.Serve(ln)
	}()
	opts.ServerID, opts.Address = id, h.addr
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.published <- etcddirectory.Publish(ctx, h.cli, h.srv.Directory(), opts) }()
	t.Cleanup(func() { h.shutdown(t) })
	return h
}

// Call calls the agent in.Value: over its session if it is here, else
// through the hub that etcd says holds it, unless the call was forwarded
// here already. A name no server holds is NotFound.
func (h *hub) Call(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	name := in.Value
	if peers := h.srv.Directory().Lookup(name); len(peers) > 0 {
		out := new(wrapperspb.StringValue)
		if err := peers[0].Invoke(ctx, "/test.Agent/Who", in, out); err != nil {
			return nil, err
		}
		return wrapperspb.String(out.Value + " via " + h.id), nil
	}
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get(forwardedBy)) > 0 {
		return nil, status.Errorf(codes.NotFound, "%s is not on %s", name, h.id)
	}
	locs, err := etcddirectory.Locate(ctx, h.cli, "", name)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "locate %s: %v", name, err)
	}
	for _, loc := range locs {
		if loc.ServerID == h.id {
			continue // it has just left here: our key goes soon
		}
		c, err := h.peer(loc.Address)
		if err != nil {
			return nil, err
		}
		out := new(wrapperspb.StringValue)
		ctx := metadata.AppendToOutgoingContext(ctx, forwardedBy, h.id)
		if err := c.Invoke(ctx, "/test.Hub/Call", in, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, status.Errorf(codes.NotFound, "no server holds %s", name)
}

// peer returns the Client of the hub at addr, made on first use.
func (h *hub) peer(addr string) (*rpc.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.peers[addr]; ok {
		return c, nil
	}
	c, err := rpc.NewClient(addr)
	if err != nil {
		return nil, err
	}
	h.peers[addr] = c
	return c, nil
}

// shutdown stops the hub cleanly: Publish revokes its lease and returns,
// then the server stops.
func (h *hub) shutdown(t *testing.T) {
	h.stop(t, func() {
		h.cancel()
		if err := <-h.published; err != nil {
			t.Errorf("%s: Publish returned %v after a clean shutdown", h.id, err)
		}
	})
}

// crash stops the hub as a crash would for etcd: its etcd client closes
// before anything else, so that Publish can neither revoke its lease nor
// delete the keys of the agents the server's stop sends away; they stay
// until the lease expires.
func (h *hub) crash(t *testing.T) {
	h.stop(t, func() {
		h.cli.Close()
		if err := <-h.published; err == nil {
			t.Errorf("%s: Publish returned nil when its etcd client closed", h.id)
		}
		h.cancel()
	})
}

func (h *hub) stop(t *testing.T, unpublish func()) {
	h.stopOnce.Do(func() {
		unpublish()
		h.srv.Stop()
		<-h.served
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.peers {
			c.Close()
		}
	})
}

// dialAgent connects agent id to the hub at addr, serving test.Agent on
// its session, until it is closed or the test ends.
func dialAgent(t *testing.T, ctx context.Context, id, addr string) *rpc.Peer {
	t.Helper()
	callbacks := rpc.NewServer()
	callbacks.RegisterService(&agentDesc, agentImpl{id})
	p, err := rpc.Dial(ctx, addr, rpc.WithSessionMetadata(metadata.Pairs("agent-id", id)), rpc.WithServices(callbacks))
	if err != nil {
		t.Fatalf("agent %s: %v", id, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dialHub returns a session to the hub at addr, to call it from the test.
func dialHub(t *testing.T, ctx context.Context, addr string) *rpc.Peer {
	t.Helper()
	p, err := rpc.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// locatedAt returns the ServerIDs that Locate gives for name, in its
// order, or fails the test.
func locatedAt(t *testing.T, ctx context.Context, cli *clientv3.Client, name string) []string {
	t.Helper()
	locs, err := etcddirectory.Locate(ctx, cli, "", name)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(locs))
	for i, l := range locs {
		ids[i] = l.ServerID
	}
	return ids
}

// within polls cond every 5 ms until it holds, and returns how long that
// took, or fails the test after bound.
func within(t *testing.T, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// agentName is the name of the i-th agent of a test.
func agentName(i int) string { return fmt.Sprintf("agent-%02d", i) }

// isGone reports whether err is how a call fails while its agent moves
// or its server goes: NotFound (no server holds it, or the one etcd named
// no longer does) or Unavailable (its session or its server went away
// under the call).
func isGone(err error) bool {
	c := status.Code(err)
	return c == codes.NotFound || c == codes.Unavailable
}

// serve serves srv on a loopback port until the test ends, and returns
// its address.
func serve(t *testing.T, srv *rpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

// closeAll closes peers, all at once.
func closeAll(peers []*rpc.Peer) {
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() { p.Close() })
	}
	wg.Wait()
}
