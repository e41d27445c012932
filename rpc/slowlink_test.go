package rpc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"github.com/muxrpc/muxrpc/rpc/internal/faultproxy"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The keepalive the slow- and dead-link tests configure on both sides.
const (
	kaInterval = 250 * time.Millisecond
	kaTimeout  = time.Second
)

func keepAliveOpt(tr mux.Transport) Option {
	return MuxConfig(&mux.Config{Transport: tr, KeepAliveInterval: kaInterval, KeepAliveTimeout: kaTimeout})
}

// digest names a payload by its length and SHA-256.
func digest(s string) string { return fmt.Sprintf("%d:%x", len(s), sha256.Sum256([]byte(s))) }

// payload returns n bytes of printable pseudo-random text, different for
// each seed.
func payload(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return string(b)
}

// TestSlowLiveLinkKeepsSession sends over a link throttled each way,
// with keepalive giving up after 1 s of silence: a client's unary call
// with a large request, then the server's call back to the client with
// one, each a single message that takes several keepalive timeouts to
// cross, while the other way carries only the small answer and
// keepalive. At 64 KiB/s the messages are 160 KiB (2.5 s each); at
// 32 KiB/s, 96 KiB (3 s each), where even one smux frame of 64 KiB takes
// two timeouts to cross. Each arrives intact (its digest comes back), the
// transfer takes at least 4 timeouts (or the throttle did not apply),
// both sessions stay up throughout, and a call after it works.
func TestSlowLiveLinkKeepsSession(t *testing.T) {
	for _, link := range []struct {
		name       string
		rate, size int
	}{
		{"64KiBps", 64 << 10, 160 << 10},
		{"32KiBps", 32 << 10, 96 << 10},
	} {
		t.Run(link.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr mux.Transport) { slowLink(t, tr, link.rate, link.size) })
		})
	}
}

// slowLink runs TestSlowLiveLinkKeepsSession over a link of rate bytes/s
// each way, with messages of size bytes.
func slowLink(t *testing.T, tr mux.Transport, rate, size int) {
	ctx := testCtx(t, 60*time.Second)
	digester := &funcEcho{unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return wrapperspb.String(digest(in.Value)), nil
	}}
	srv := NewServer(keepAliveOpt(tr))
	srv.RegisterService(&echoDesc, digester)
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, digester)
	px := proxyTo(t, serve(t, srv))
	px.Throttle(faultproxy.Both, rate)
	client := dial(t, px.Addr(), WithServices(callbacks), keepAliveOpt(tr))
	server := onlyPeer(t, srv)

	start := time.Now()
	for i, dir := range []struct {
		name string
		p    *Peer
	}{{"client to server", client}, {"server to client", server}} {
		in := payload(uint64(i+1), size)
		sent := time.Now()
		out, err := echoClient{dir.p}.Unary(ctx, wrapperspb.String(in))
		if err != nil {
			t.Fatalf("%s: a %d KiB call over the slow link failed after %v: %v (sessions: client %v, server %v)",
				dir.name, size>>10, time.Since(sent), err, client.Err(), server.Err())
		}
		if out.Value != digest(in) {
			t.Fatalf("%s: the callee got %s, want %s", dir.name, out.Value, digest(in))
		}
		took := time.Since(sent)
		t.Logf("%s: one %d KiB message crossed in %v (%.1f KiB/s)", dir.name, size>>10, took, float64(size)/took.Seconds()/1024)
	}
	took := time.Since(start)
	if took < 4*kaTimeout {
		t.Fatalf("the transfer took %v: the link was not slow enough to test keepalive", took)
	}
	for _, p := range []*Peer{client, server} {
		if err := p.Err(); err != nil {
			t.Fatalf("a session ended over a slow but live link: %v", err)
		}
	}
	if out, err := (echoClient{client}).Unary(ctx, wrapperspb.String("after")); err != nil || out.Value != digest("after") {
		t.Fatalf("a call after the transfer: got %v, %v", out, err)
	}
}
