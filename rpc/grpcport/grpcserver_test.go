package grpcport_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDialingAGRPCServerSaysSo: rpc.Dial, of either transport, to a plain
// gRPC server fails at once with Unavailable and says that the server
// speaks HTTP/2: grpc-go's server sends its SETTINGS frame first.
func TestDialingAGRPCServerSaysSo(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	done := make(chan struct{})
	go func() { defer close(done); gs.Serve(lis) }()
	defer func() { gs.Stop(); <-done }()
	const want = "the peer speaks HTTP/2: a gRPC server? (muxrpc and gRPC share a port only through rpc/grpcport)"
	for _, tr := range []mux.Transport{mux.Native, mux.Smux} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		p, err := rpc.Dial(ctx, lis.Addr().String(), rpc.MuxConfig(&mux.Config{Transport: tr}))
		d := time.Since(start)
		cancel()
		if p != nil {
			p.Close()
			t.Fatalf("%v: Dial succeeded", tr)
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) || !errors.Is(err, mux.ErrNotMuxrpc) {
			t.Errorf("%v: %v; want Unavailable, ErrNotMuxrpc, saying %q", tr, err, want)
		}
		if d > 2*time.Second {
			t.Errorf("%v: Dial failed only after %v", tr, d)
		}
		for _, p := range []string{"mux: ", "rpc: "} {
			if strings.Count(err.Error(), p) > 1 {
				t.Errorf("%q says %q more than once", err, p)
			}
		}
	}
}
