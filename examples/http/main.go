// Command http runs net/http in both directions over one muxrpc session,
// beside rpc calls on the same session: an agent dials out to a hub, and
// the hub then reaches the agent's HTTP server through that connection,
// with no listener on the agent's side.
//
//	go run ./examples/http
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run starts a hub on a loopback port, connects an agent to it, and makes
// requests both ways.
func run(ctx context.Context, out io.Writer) error {
	lis, err := mux.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		return err
	}
	defer lis.Close()

	agent, err := mux.Dial(ctx, "tcp", lis.Addr().String(), nil)
	if err != nil {
		return err
	}
	defer agent.Close()
	hub, err := lis.Accept()
	if err != nil {
		return err
	}
	defer hub.Close()

	// Each side serves HTTP on the session's TypeNet streams.
	stopAgent := serveHTTP(agent, "agent")
	defer stopAgent()
	stopHub := serveHTTP(hub, "hub")
	defer stopHub()

	// The hub calls the agent, which has no listener of its own.
	body, err := get(ctx, hub, "http://agent/status")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "hub -> agent: %s\n", body)
	// And the agent calls the hub, on the same connection.
	if body, err = get(ctx, agent, "http://hub/status"); err != nil {
		return err
	}
	fmt.Fprintf(out, "agent -> hub: %s\n", body)

	// rpc calls share the session with HTTP: their streams have a type of
	// their own.
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, echo{})
	served := make(chan error, 1)
	go func() { served <- srv.ServeSession(hub) }()
	caller := rpc.NewPeer(agent)
	resp, err := echov1.NewEchoClient(caller).Unary(ctx, &echov1.EchoRequest{Message: "rpc beside http"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "agent -> hub rpc: %s\n", resp.Message)
	caller.Close()
	return <-served
}

// serveHTTP serves an HTTP handler that names itself on the session's
// TypeNet streams, until the returned function is called.
func serveHTTP(sess *mux.Session, name string) (stop func()) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s is up (%s %s)", name, r.Method, r.URL.Path)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(sess.NetListener(mux.TypeNet))
	}()
	return func() {
		srv.Close()
		<-done
	}
}

// get fetches url through a TypeNet stream of sess; the URL's host only
// names the other side.
func get(ctx context.Context, sess *mux.Session, url string) (string, error) {
	transport := &http.Transport{DialContext: sess.DialContext}
	defer transport.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

type echo struct {
	echov1.UnimplementedEchoServer
}

func (echo) Unary(_ context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: req.Message}, nil
}
