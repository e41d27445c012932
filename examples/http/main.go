// Command http runs net/http in both directions over one muxrpc session,
// beside rpc calls on the same session: an agent dials out to a hub, and
// the hub then reaches the agent's HTTP server through that connection,
// with no listener on the agent's side.
//
// By default the hub and the agent run in one process, on a loopback
// port:
//
//	go run ./examples/http
//
// or in two processes:
//
//	go run ./examples/http -listen 127.0.0.1:7070   # the hub, until Ctrl-C
//	go run ./examples/http -connect 127.0.0.1:7070  # the agent
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
)

func main() {
	listen := flag.String("listen", "", "only run the hub, on this address")
	connect := flag.String("connect", "", "only run the agent, against this address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *listen != "":
		var lis net.Listener
		if lis, err = net.Listen("tcp", *listen); err == nil {
			log.Printf("hub serving on %s", lis.Addr())
			err = runHub(ctx, os.Stdout, lis)
		}
	case *connect != "":
		err = runAgent(ctx, os.Stdout, *connect)
	default:
		err = runBoth(ctx, os.Stdout)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runBoth runs a hub on a loopback port and one agent against it.
func runBoth(ctx context.Context, out io.Writer) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hubCtx, stopHub := context.WithCancel(ctx)
	hubDone := make(chan error, 1)
	go func() { hubDone <- runHub(hubCtx, out, lis) }()
	err = runAgent(ctx, out, lis.Addr().String())
	stopHub()
	return errors.Join(err, <-hubDone)
}

// runHub serves agents on lis until ctx ends, then stops gracefully: each
// session's rpc calls and its HTTP server on the session's TypeNet
// streams.
func runHub(ctx context.Context, out io.Writer, lis net.Listener) error {
	ml, err := mux.NewListener(lis, nil)
	if err != nil {
		return err
	}
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, hubEcho{out: out})
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ml.Close()
		srv.GracefulStop()
	}()
	for {
		sess, err := ml.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() {
			stop := serveHTTP(sess, "hub")
			defer stop()
			srv.ServeSession(sess)
		})
	}
}

// runAgent dials the hub, serves HTTP to it on the session it opened,
// calls it by rpc (whose handler fetches the agent's HTTP status over the
// session), and fetches the hub's HTTP status itself.
func runAgent(ctx context.Context, out io.Writer, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sess, err := mux.Dial(ctx, "tcp", addr, nil)
	if err != nil {
		return err
	}
	stopHTTP := serveHTTP(sess, "agent")
	defer stopHTTP()
	// rpc calls share the session with HTTP: their streams have a type of
	// their own.
	p := rpc.NewPeer(sess)
	defer p.Close()
	resp, err := echov1.NewEchoClient(p).Unary(ctx, &echov1.EchoRequest{Message: "rpc beside http"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "agent -> hub rpc: %s\n", resp.Message)
	// And the agent calls the hub's HTTP server, on the same connection.
	body, err := get(ctx, sess, "http://hub/status")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "agent -> hub: %s\n", body)
	return nil
}

// hubEcho answers Unary after fetching the calling agent's HTTP status
// through the caller's session: the agent has no listener of its own.
type hubEcho struct {
	echov1.UnimplementedEchoServer
	out io.Writer
}

func (h hubEcho) Unary(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	body, err := get(ctx, rpc.PeerFromContext(ctx).Session(), "http://agent/status")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(h.out, "hub -> agent: %s\n", body)
	return &echov1.EchoResponse{Message: req.Message}, nil
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
