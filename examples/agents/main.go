// Command agents shows a hub that calls the agents connected to it: each
// agent dials the hub (from behind a NAT, say), authenticates its session
// once with a token, and serves the Agent service on the connection it
// opened; the hub finds agents by name in its Directory, calls one, then
// all of them at once, and prints what it knows of each agent's session
// (Peer.Stats).
//
// By default the hub and five agents run in one process, on a loopback
// port:
//
//	go run ./examples/agents
//
// or as separate processes, the hub first (it lists and calls its agents
// every few seconds), then any number of agents:
//
//	go run ./examples/agents -listen 127.0.0.1:7071
//	go run ./examples/agents -connect 127.0.0.1:7071 -name build-1
//
// An agent's token is the HMAC of its name under the secret the hub and
// the agents share (-secret); an agent with a wrong token is refused
// before the hub serves or makes any call on its session.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	agentv1 "github.com/muxrpc/muxrpc/proto/agent/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	listen := flag.String("listen", "", "only run the hub, serving on this address")
	connect := flag.String("connect", "", "only run one agent, connecting to the hub at this address")
	name := flag.String("name", "", "the agent's name, with -connect (default: the host name)")
	agents := flag.Int("agents", 5, "how many agents to run beside the hub, in one process")
	secret := flag.String("secret", "muxrpc example secret", "the secret the hub and the agents share")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *listen != "":
		var lis net.Listener
		if lis, err = net.Listen("tcp", *listen); err == nil {
			log.Printf("hub serving on %s", lis.Addr())
			err = runHub(ctx, os.Stdout, lis, *secret, 5*time.Second)
		}
	case *connect != "":
		if *name == "" {
			*name, _ = os.Hostname()
		}
		err = runAgent(ctx, *connect, *name, *secret)
	default:
		err = runBoth(ctx, os.Stdout, *agents, *secret)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// token is the token of the agent name: the HMAC-SHA256 of the name under
// secret, in hex.
func token(secret, name string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(name))
	return hex.EncodeToString(mac.Sum(nil))
}

// newHub returns the hub's Server: it admits the sessions of agents whose
// token matches their name, under that name.
func newHub(secret string) *rpc.Server {
	return rpc.NewServer(rpc.WithAuthenticator(func(ctx context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		name, tok := first(h.Metadata, "agent-name"), first(h.Metadata, "authorization")
		if name == "" || !hmac.Equal([]byte(tok), []byte("Bearer "+token(secret, name))) {
			return rpc.Identity{}, status.Errorf(codes.Unauthenticated, "bad token for agent %q", name)
		}
		return rpc.Identity{Name: name}, nil
	}), rpc.DuplicateIdentities(rpc.ReplaceOldest)) // a reconnecting agent replaces its old session
}

func first(md metadata.MD, key string) string {
	if vs := md.Get(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// newAgent returns the Client of the agent name, connecting to the hub at
// addr and serving it the Agent service. The Client reconnects by itself
// when the hub restarts, and the hub lists it again under its name.
func newAgent(addr, name, secret string) (*rpc.Client, error) {
	services := rpc.NewServer()
	agentv1.RegisterAgentServer(services, &agent{name: name, started: time.Now()})
	cl, err := rpc.NewClient(addr,
		rpc.WithServices(services),
		rpc.WithSessionMetadata(metadata.Pairs("agent-name", name, "authorization", "Bearer "+token(secret, name))),
		rpc.WithConnectParams(rpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}}))
	if err != nil {
		return nil, err
	}
	cl.Connect() // an agent makes no call: connect now, and stay connected
	return cl, nil
}

// runBoth runs the hub and n agents on a loopback port, shows the hub
// calling them, and stops.
func runBoth(ctx context.Context, out io.Writer, n int, secret string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hub := newHub(secret)
	served := make(chan error, 1)
	go func() { served <- hub.Serve(lis) }()
	defer func() { hub.GracefulStop(); <-served }()

	var names []string
	for i := range n {
		name := fmt.Sprintf("agent-%d", i+1)
		cl, err := newAgent(lis.Addr().String(), name, secret)
		if err != nil {
			return err
		}
		defer cl.Close()
		names = append(names, name)
	}
	slices.Sort(names) // as the Directory lists them
	// An impostor, whose token is not its name's: refused at once.
	_, err = rpc.Dial(ctx, lis.Addr().String(), rpc.WithSessionMetadata(metadata.Pairs("agent-name", "agent-1", "authorization", "Bearer forged")))
	fmt.Fprintf(out, "impostor refused: %v\n", status.Code(err))

	if err := waitForAgents(ctx, hub.Directory(), names); err != nil {
		return err
	}
	if err := callAgents(ctx, out, hub.Directory()); err != nil {
		return err
	}
	printStats(out, hub)
	return nil
}

// printStats prints what the hub knows of each agent's session, by name:
// where it connects from, for how long, the streams and calls in flight
// (calls out are the hub's to the agent, calls in the agent's to the
// hub), the bytes each way, and the last keepalive round trip. The same
// numbers are what package rpc/peermetrics exports to Prometheus.
func printStats(out io.Writer, hub *rpc.Server) {
	peers := hub.Peers()
	slices.SortFunc(peers, func(a, b *rpc.Peer) int { return strings.Compare(a.Identity().Name, b.Identity().Name) })
	for _, p := range peers {
		st := p.Stats()
		rtt := "no keepalive yet"
		if st.LastRTT > 0 {
			rtt = "rtt " + st.LastRTT.String()
		}
		tlsState := "no TLS"
		if st.TLS != nil {
			tlsState = tls.VersionName(st.TLS.Version)
		}
		fmt.Fprintf(out, "stats %s: %s from %s, %s, up %v, %d streams open, calls %d out %d in, %d bytes sent, %d received, %s\n",
			st.Identity.Name, st.Transport, st.RemoteAddr, tlsState, time.Since(st.Started).Round(time.Millisecond),
			st.StreamsOpen, st.CallsOut, st.CallsIn, st.BytesSent, st.BytesReceived, rtt)
	}
}

// waitForAgents waits until every agent of names is in dir.
func waitForAgents(ctx context.Context, dir *rpc.Directory, names []string) error {
	events := dir.Watch(ctx)
	for !slices.Equal(dir.Names(), names) {
		select {
		case <-events:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the agents: %w (the hub has %q)", ctx.Err(), dir.Names())
		}
	}
	return nil
}

// callAgents lists the hub's agents, calls the first by name, then all of
// them at once.
func callAgents(ctx context.Context, out io.Writer, dir *rpc.Directory) error {
	names := dir.Names()
	fmt.Fprintf(out, "the hub has %d agents: %s\n", len(names), strings.Join(names, ", "))
	if len(names) == 0 {
		return nil
	}

	// One agent, by name: the call goes to its current session.
	one := agentv1.NewAgentClient(dir.Conn(names[0]))
	res, err := one.Run(ctx, &agentv1.RunRequest{Command: "echo hello from the hub"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s ran echo: %s\n", names[0], res.Output)

	// The jobs of one customer, always on the same agent while it is
	// connected: a sticky key.
	fleet := dir.Fleet("muxrpc.agent.v1.Agent", rpc.RoundRobin)
	ran := map[string]int{}
	for range 3 {
		res, err := agentv1.NewAgentClient(fleet).Run(ctx, &agentv1.RunRequest{Command: "whoami"}, rpc.StickyKey("customer-42"))
		if err != nil {
			return err
		}
		ran[res.Output]++
	}
	for name, n := range ran {
		fmt.Fprintf(out, "customer-42's %d jobs ran on %s\n", n, name)
	}

	// Every agent at once, each call with its own deadline.
	results := rpc.FanOut(ctx, fleet, rpc.FanOutOptions{Timeout: 2 * time.Second},
		func(ctx context.Context, cc rpc.ClientConnInterface) (*agentv1.StatusResponse, error) {
			return agentv1.NewAgentClient(cc).Status(ctx, &agentv1.StatusRequest{})
		})
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(out, "%s: %v\n", r.Name, status.Code(r.Err))
			continue
		}
		fmt.Fprintf(out, "%s: status %s, %d commands run\n", r.Name, r.Reply.Name, r.Reply.CommandsRun)
	}
	return nil
}

// runHub serves agents on lis and, every so often, lists them and calls
// them, until ctx ends.
func runHub(ctx context.Context, out io.Writer, lis net.Listener, secret string, every time.Duration) error {
	hub := newHub(secret)
	served := make(chan error, 1)
	go func() { served <- hub.Serve(lis) }()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for e := range hub.Directory().Watch(ctx) {
			what := "joined"
			if !e.Joined {
				what = "left"
			}
			log.Printf("%s %s from %s", e.Name, what, e.Peer.RemoteAddr())
		}
	}()
	defer func() { <-watched }()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			cctx, cancel := context.WithTimeout(ctx, every)
			err := callAgents(cctx, out, hub.Directory())
			cancel()
			if err != nil {
				log.Print(err)
			}
			printStats(out, hub)
		case <-ctx.Done():
			hub.GracefulStop()
			return <-served
		case err := <-served:
			return err
		}
	}
}

// runAgent runs the agent name against the hub at addr until ctx ends.
func runAgent(ctx context.Context, addr, name, secret string) error {
	cl, err := newAgent(addr, name, secret)
	if err != nil {
		return err
	}
	log.Printf("agent %s connecting to %s", name, addr)
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Shutdown(shutdown)
}

// agent implements the Agent service.
type agent struct {
	agentv1.UnimplementedAgentServer
	name    string
	started time.Time
	runs    atomic.Int64
}

func (a *agent) Status(ctx context.Context, _ *agentv1.StatusRequest) (*agentv1.StatusResponse, error) {
	host, _ := os.Hostname()
	return &agentv1.StatusResponse{
		Name:          a.name,
		Host:          host,
		UptimeSeconds: int64(time.Since(a.started).Seconds()),
		CommandsRun:   a.runs.Load(),
	}, nil
}

func (a *agent) Run(ctx context.Context, req *agentv1.RunRequest) (*agentv1.RunResponse, error) {
	cmd, arg, _ := strings.Cut(req.Command, " ")
	var output string
	switch cmd {
	case "echo":
		output = arg
	case "hostname":
		output, _ = os.Hostname()
	case "whoami":
		output = a.name
	case "uptime":
		output = time.Since(a.started).Round(time.Second).String()
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown command %q", cmd)
	}
	a.runs.Add(1)
	return &agentv1.RunResponse{Output: output}, nil
}
