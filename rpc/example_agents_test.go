package rpc_test

import (
	"context"
	"fmt"
	"net"
	"time"

	agentv1 "github.com/muxrpc/muxrpc/proto/agent/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// agent answers Status with its name.
type agent struct {
	agentv1.UnimplementedAgentServer
	name string
}

func (a agent) Status(context.Context, *agentv1.StatusRequest) (*agentv1.StatusResponse, error) {
	return &agentv1.StatusResponse{Name: a.name}, nil
}

// dialAgent connects the agent name to the hub at addr, with its token,
// serving the Agent service on the session it opens.
func dialAgent(ctx context.Context, addr, name, token string) (*rpc.Peer, error) {
	// An agent: its credentials once per session, its services on the connection it opens.
	services := rpc.NewServer()
	agentv1.RegisterAgentServer(services, agent{name: name})
	p, err := rpc.Dial(ctx, addr,
		rpc.WithSessionMetadata(metadata.Pairs("agent-id", name, "authorization", "Bearer "+token)),
		rpc.WithServices(services))
	return p, err
}

// A hub authenticates each agent's session once, when it connects, and
// then calls agents by name, or all of them at once, on the connections
// they opened.
func ExampleDirectory() {
	tokens := map[string]string{"agent-1": "s3cret-1", "agent-2": "s3cret-2"}
	hub := rpc.NewServer(rpc.WithAuthenticator(func(ctx context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		id, token := h.Metadata.Get("agent-id"), h.Metadata.Get("authorization")
		if len(id) != 1 || len(token) != 1 || token[0] != "Bearer "+tokens[id[0]] {
			return rpc.Identity{}, status.Error(codes.Unauthenticated, "bad token")
		}
		return rpc.Identity{Name: id[0]}, nil
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go hub.Serve(lis)
	defer hub.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := lis.Addr().String()

	for name, token := range tokens {
		p, err := dialAgent(ctx, addr, name, token)
		if err != nil {
			panic(err)
		}
		defer p.Close()
	}
	_, err = dialAgent(ctx, addr, "agent-3", "guessed")
	fmt.Println("agent-3:", status.Code(err))

	dir := hub.Directory()
	fmt.Println("agents:", dir.Names())

	one, err := agentv1.NewAgentClient(dir.Conn("agent-2")).Status(ctx, &agentv1.StatusRequest{})
	fmt.Println("by name:", one.GetName(), err)

	fleet := dir.Fleet("muxrpc.agent.v1.Agent", rpc.RoundRobin)
	all := rpc.FanOut(ctx, fleet, rpc.FanOutOptions{Timeout: time.Second},
		func(ctx context.Context, cc rpc.ClientConnInterface) (*agentv1.StatusResponse, error) {
			return agentv1.NewAgentClient(cc).Status(ctx, &agentv1.StatusRequest{})
		})
	for _, r := range all {
		fmt.Println("fan-out:", r.Name, r.Reply.GetName(), r.Err)
	}
	// Output:
	// agent-3: Unauthenticated
	// agents: [agent-1 agent-2]
	// by name: agent-2 <nil>
	// fan-out: agent-1 agent-1 <nil>
	// fan-out: agent-2 agent-2 <nil>
}
