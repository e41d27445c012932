package rpc

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var transports = []mux.Transport{mux.Native, mux.Smux}

// forEachTransport runs f as a sub-test on each transport.
func forEachTransport(t *testing.T, f func(t *testing.T, tr mux.Transport)) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) { f(t, tr) })
	}
}

// serve starts srv on a loopback listener and returns its address; the
// server stops when the test ends.
func serve(t testing.TB, srv *Server) string {
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

// dial connects to addr and closes the peer when the test ends.
func dial(t testing.TB, addr string, opts ...DialOption) *Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func muxOpt(tr mux.Transport) Option { return MuxConfig(&mux.Config{Transport: tr}) }
