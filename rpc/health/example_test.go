package health_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/health"
	"github.com/muxrpc/muxrpc/rpc/health/healthv1"
)

// A server registers the health service and sets the status of its
// services; a client asks with Check, or watches with health.Check.
func ExampleRegister() {
	srv := rpc.NewServer()
	hs := health.NewServer()
	health.Register(srv, hs)
	hs.SetServingStatus("muxrpc.echo.v1.Echo", healthv1.HealthCheckResponse_SERVING)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Stop(); <-served }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := rpc.Dial(ctx, ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// A single question.
	resp, err := healthv1.NewHealthClient(p).Check(ctx, &healthv1.HealthCheckRequest{Service: "muxrpc.echo.v1.Echo"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Check:", resp.GetStatus())

	// A watch, as an rpc client runs it on each of its sessions.
	watchCtx, stopWatch := context.WithCancel(ctx)
	reports := make(chan bool)
	ended := make(chan error)
	check := health.Check("muxrpc.echo.v1.Echo")
	go func() {
		ended <- check(watchCtx, p, func(serving bool) { reports <- serving })
	}()
	fmt.Println("serving:", <-reports)
	hs.SetServingStatus("muxrpc.echo.v1.Echo", healthv1.HealthCheckResponse_NOT_SERVING)
	fmt.Println("serving:", <-reports)
	stopWatch()
	fmt.Println("check returned:", <-ended)
	// Output:
	// Check: SERVING
	// serving: true
	// serving: false
	// check returned: <nil>
}
