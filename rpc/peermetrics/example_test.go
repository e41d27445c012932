package peermetrics_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"slices"
	"strings"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/peermetrics"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A server whose Authenticator names its peers exports them to
// Prometheus; here one agent is connected, and the example prints the
// series a scrape finds, without their values (the peer label is the
// agent's address, shown as <agent's address>). Serve reg over HTTP with
// promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).
func ExampleNewCollector() {
	srv := rpc.NewServer(rpc.WithAuthenticator(func(_ context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		name := h.Metadata.Get("agent-name")
		if len(name) != 1 {
			return rpc.Identity{}, status.Error(codes.Unauthenticated, "no agent-name")
		}
		return rpc.Identity{Name: name[0]}, nil
	}))
	echov1.RegisterEchoServer(srv, echo{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(peermetrics.NewCollector(srv))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	agent, err := rpc.Dial(ctx, lis.Addr().String(), rpc.WithSessionMetadata(metadata.Pairs("agent-name", "build-1")))
	if err != nil {
		log.Fatal(err)
	}
	defer agent.Close()
	for len(srv.Peers()) == 0 { // the server lists the agent once it has admitted it
		time.Sleep(time.Millisecond)
	}

	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if l.GetName() == "peer" && v == agent.Session().LocalAddr().String() {
					v = "<agent's address>"
				}
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), v))
			}
			slices.Sort(labels)
			fmt.Printf("%s %s {%s}\n", f.GetName(), strings.ToLower(f.GetType().String()), strings.Join(labels, ", "))
		}
	}
	// Output:
	// muxrpc_peer_bytes_received_total counter {identity="build-1", peer="<agent's address>"}
	// muxrpc_peer_bytes_sent_total counter {identity="build-1", peer="<agent's address>"}
	// muxrpc_peer_calls_in_flight gauge {direction="in", identity="build-1", peer="<agent's address>"}
	// muxrpc_peer_calls_in_flight gauge {direction="out", identity="build-1", peer="<agent's address>"}
	// muxrpc_peer_started_timestamp_seconds gauge {identity="build-1", peer="<agent's address>"}
	// muxrpc_peer_streams_open gauge {identity="build-1", peer="<agent's address>"}
	// muxrpc_peers gauge {}
}
