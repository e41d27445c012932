package etcddirectory_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/etcddirectory"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
)

// A server lists its agents by the id they send in their session
// metadata and publishes its Directory to etcd; any server of the fleet
// then finds which server holds an agent.
func ExamplePublish() {
	endpoint, stopEtcd := exampleEtcd() // your etcd's endpoints instead
	defer stopEtcd()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	srv := rpc.NewServer(rpc.WithAuthenticator(func(ctx context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		return rpc.Identity{Name: strings.Join(h.Metadata.Get("agent-id"), "")}, nil
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()

	ctx, stop := context.WithCancel(context.Background())
	published := make(chan error, 1)
	go func() {
		published <- etcddirectory.Publish(ctx, cli, srv.Directory(), etcddirectory.Options{
			ServerID: "server-1",
			Address:  "server-1.internal:7000", // where the other servers reach this one
		})
	}()
	// Ending Publish revokes its lease: the server's entries vanish at
	// once, as they would after the TTL if it crashed.
	defer func() { stop(); <-published }()

	agent, err := rpc.Dial(ctx, ln.Addr().String(), rpc.WithSessionMetadata(metadata.Pairs("agent-id", "agent-7")))
	if err != nil {
		log.Fatal(err)
	}
	defer agent.Close()

	// Publishing follows the Directory within milliseconds, not at once.
	for {
		locs, err := etcddirectory.Locate(ctx, cli, "", "agent-7")
		if err != nil {
			log.Fatal(err)
		}
		if len(locs) > 0 {
			fmt.Println("agent-7 is on", locs[0].ServerID, "at", locs[0].Address)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output: agent-7 is on server-1 at server-1.internal:7000
}

// exampleEtcd starts an embedded etcd for the example, and returns its
// endpoint and what stops it.
func exampleEtcd() (endpoint string, stop func()) {
	dir, err := os.MkdirTemp("", "etcddirectory-example")
	if err != nil {
		log.Fatal(err)
	}
	e, endpoint, err := embeddedEtcd(dir)
	if err != nil {
		log.Fatal(err)
	}
	return endpoint, func() {
		e.Close()
		os.RemoveAll(dir)
	}
}
