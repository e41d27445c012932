package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fastConnect makes a Client retry within a test's patience.
var fastConnect = WithConnectParams(ConnectParams{
	Backoff:           backoffConfig(20*time.Millisecond, 200*time.Millisecond),
	MinConnectTimeout: 2 * time.Second,
})

// backend is one server of a test's fleet: it answers echo calls with its
// name and counts the unary calls its handler ran.
type backend struct {
	name string
	addr string
	srv  *Server
	runs atomic.Int64
	done chan struct{}
	hold atomic.Pointer[chan struct{}] // when set, unary handlers wait for it to close
}

// holdCalls makes the backend's unary handlers wait until release.
func (b *backend) holdCalls() (release func()) {
	ch := make(chan struct{})
	b.hold.Store(&ch)
	return func() { close(ch) }
}

// startBackend serves a backend on addr ("127.0.0.1:0" for any port).
func startBackend(t testing.TB, name, addr string, opts ...ServerOption) *backend {
	t.Helper()
	b := &backend{name: name, done: make(chan struct{})}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	b.srv = NewServer(opts...)
	b.srv.RegisterService(&echoDesc, &funcEcho{unary: b.unary})
	go func() {
		defer close(b.done)
		b.srv.Serve(ln)
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	b.runs.Add(1)
	if h := b.hold.Load(); h != nil {
		select {
		case <-*h:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if in.Value == "callback" {
		back, err := backTo(ctx)
		if err != nil {
			return nil, err
		}
		out, err := back.Unary(ctx, wrapperspb.String(b.name))
		if err != nil {
			return nil, err
		}
		return wrapperspb.String(b.name + ">" + out.Value), nil
	}
	return wrapperspb.String(b.name + ":" + in.Value), nil
}

// stop stops the backend at once and waits for Serve to return.
func (b *backend) stop() {
	b.srv.Stop()
	<-b.done
}

// newClient makes a Client closed when the test ends.
func newClient(t testing.TB, target string, opts ...DialOption) *Client {
	t.Helper()
	c, err := NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// answerer returns the name of the backend that answered a call.
func answerer(t testing.TB, ctx context.Context, cc ClientConnInterface, opts ...CallOption) string {
	t.Helper()
	out, err := echoClient{cc}.Unary(ctx, wrapperspb.String("x"), opts...)
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	name, _, _ := strings.Cut(out.Value, ":")
	return name
}

// backoffConfig is a backoff from base to max, by gRPC's factors.
func backoffConfig(base, max time.Duration) backoff.Config {
	return backoff.Config{BaseDelay: base, Multiplier: 1.6, Jitter: 0.2, MaxDelay: max}
}

// TestClientIsLazy checks that NewClient connects nothing until the first
// call, which then connects and succeeds, every call kind working through
// the Client, on both transports.
func TestClientIsLazy(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, defaultEcho)
		addr := serve(t, srv)
		c := newClient(t, "passthrough:///"+addr, muxOpt(tr))
		if got := c.GetState(); got != connectivity.Idle {
			t.Fatalf("state before any call: %v, want Idle", got)
		}
		time.Sleep(50 * time.Millisecond)
		if n := len(srv.Peers()); n != 0 {
			t.Fatalf("the server has %d sessions before any call, want none", n)
		}
		ctx := testCtx(t, 10*time.Second)
		checkEcho(t, ctx, c, "server")
		if got := c.GetState(); got != connectivity.Ready {
			t.Errorf("state after a call: %v, want Ready", got)
		}
		ec := echoClient{c}
		ss, err := ec.ServerStream(ctx, wrapperspb.String("s"))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if m, err := ss.Recv(); err != nil || m.Value != "server:s" {
				t.Fatalf("server stream: %v, %v", m, err)
			}
		}
		cs, err := ec.ClientStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs.Send(wrapperspb.String("a"))
		cs.Send(wrapperspb.String("b"))
		if m, err := cs.CloseAndRecv(); err != nil || m.Value != "server:a,b" {
			t.Fatalf("client stream: %v, %v", m, err)
		}
		bs, err := ec.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bs.Send(wrapperspb.String("c"))
		if m, err := bs.Recv(); err != nil || m.Value != "server:c" {
			t.Fatalf("bidi: %v, %v", m, err)
		}
		bs.CloseSend()
		if n := len(srv.Peers()); n != 1 {
			t.Errorf("the server has %d sessions, want the one", n)
		}
	})
}

// TestClientReconnectsAfterRestart checks that a Client outlives its
// server: stopped, calls fail with Unavailable (or wait, with
// WaitForReady); restarted on the same address, calls succeed again, and
// the server's calls back reach the client's services, without the user
// doing anything.
func TestClientReconnectsAfterRestart(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		b := startBackend(t, "first", "127.0.0.1:0", muxOpt(tr))
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
		c := newClient(t, "passthrough:///"+b.addr, fastConnect, muxOpt(tr), WithServices(callbacks))
		ctx := testCtx(t, 20*time.Second)
		if got := callback(t, ctx, c); got != "first>client:first" {
			t.Fatalf("callback through the first server: %q", got)
		}
		b.stop()
		eventually(t, 10*time.Second, "a fail-fast call to fail with Unavailable", func() bool {
			_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
			return err != nil && status.Code(err) == codes.Unavailable
		})
		// A call that waits for the restart.
		waited := async(func() error {
			_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"), WaitForReady(true))
			return err
		})
		time.Sleep(100 * time.Millisecond)
		startBackend(t, "second", b.addr, muxOpt(tr))
		if err := await(t, waited, 15*time.Second, "the waiting call"); err != nil {
			t.Fatalf("a WaitForReady call across the restart: %v", err)
		}
		if got := callback(t, ctx, c); got != "second>client:second" {
			t.Fatalf("callback through the restarted server: %q", got)
		}
	})
}

// callback makes a call whose handler calls the client back.
func callback(t testing.TB, ctx context.Context, cc ClientConnInterface) string {
	t.Helper()
	out, err := echoClient{cc}.Unary(ctx, wrapperspb.String("callback"), WaitForReady(true))
	if err != nil {
		t.Fatalf("callback call: %v", err)
	}
	return out.Value
}

// TestClientMovesCallsOffAGoingAwaySession checks that a session the
// server sends away finishes its calls in flight while new calls go to a
// new session, none failing.
func TestClientMovesCallsOffAGoingAwaySession(t *testing.T) {
	b := startBackend(t, "b", "127.0.0.1:0")
	c := newClient(t, "passthrough:///"+b.addr, fastConnect)
	ctx := testCtx(t, 20*time.Second)
	checkEchoName(t, ctx, c, "b")
	first := onlyPeer(t, b.srv)
	release := b.holdCalls()
	inFlight := async(func() error {
		_, err := echoClient{c}.Unary(ctx, wrapperspb.String("held"))
		return err
	})
	eventually(t, 5*time.Second, "the held call to run", func() bool { return b.runs.Load() == 2 })
	shut := async(func() error { return first.Shutdown(ctx) })
	eventually(t, 5*time.Second, "the client to open a second session", func() bool { return len(b.srv.Peers()) == 2 })
	release()
	for range 20 {
		checkEchoName(t, ctx, c, "b")
	}
	if err := await(t, inFlight, 5*time.Second, "the call in flight"); err != nil {
		t.Fatalf("the call in flight on the going-away session: %v", err)
	}
	if err := await(t, shut, 5*time.Second, "the server's Shutdown of the first session"); err != nil {
		t.Fatal(err)
	}
	if got, want := b.runs.Load(), int64(22); got != want {
		t.Errorf("handlers ran %d times, want %d: one per call", got, want)
	}
}

func checkEchoName(t testing.TB, ctx context.Context, cc ClientConnInterface, name string) {
	t.Helper()
	if got := answerer(t, ctx, cc); got != name {
		t.Fatalf("answered by %q, want %q", got, name)
	}
}

// TestClientRoundRobin checks that RoundRobin spreads calls evenly over
// every address, and that an address the resolver drops stops receiving
// calls, its calls in flight finishing.
func TestClientRoundRobin(t *testing.T) {
	var fleet []*backend
	var addrs []resolver.Address
	for i := range 3 {
		b := startBackend(t, fmt.Sprint("b", i), "127.0.0.1:0")
		fleet = append(fleet, b)
		addrs = append(addrs, resolver.Address{Addr: b.addr})
	}
	r := manual.NewBuilderWithScheme("fleet")
	r.InitialState(resolver.State{Addresses: addrs})
	c := newClient(t, "fleet:///backends", WithResolvers(r), WithBalancer(RoundRobin), fastConnect)
	ctx := testCtx(t, 20*time.Second)
	seen := map[string]int{}
	eventually(t, 10*time.Second, "every backend to answer", func() bool {
		seen[answerer(t, ctx, c)]++
		return len(seen) == 3
	})
	// Once every session is ready, the turns are exact.
	counts := map[string]int{}
	for range 300 {
		counts[answerer(t, ctx, c)]++
	}
	for _, b := range fleet {
		if counts[b.name] != 100 {
			t.Errorf("round robin over 3: %v, want 100 each", counts)
			break
		}
	}
	// Drop b2 while a call is in flight on it.
	release := fleet[2].holdCalls()
	held := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
			held <- err
		}()
	}
	eventually(t, 5*time.Second, "a call in flight on b2", func() bool { return fleet[2].runs.Load() > 100 })
	r.UpdateState(resolver.State{Addresses: addrs[:2]})
	release()
	for range 3 {
		if err := await(t, held, 5*time.Second, "the calls in flight"); err != nil {
			t.Fatalf("a call in flight when its address was dropped: %v", err)
		}
	}
	before := fleet[2].runs.Load()
	for range 50 {
		if name := answerer(t, ctx, c); name == "b2" {
			t.Fatal("a call went to the dropped address")
		}
	}
	if fleet[2].runs.Load() != before {
		t.Error("the dropped backend ran calls")
	}
	eventually(t, 5*time.Second, "the dropped backend's session to end", func() bool { return len(fleet[2].srv.Peers()) == 0 })
}

// TestClientLeastOutstanding checks that LeastOutstanding keeps calls off
// a server whose calls do not finish, where RoundRobin sends it its share.
func TestClientLeastOutstanding(t *testing.T) {
	for _, bal := range []Balancer{LeastOutstanding, RoundRobin} {
		t.Run(bal.String(), func(t *testing.T) {
			stuck := startBackend(t, "stuck", "127.0.0.1:0")
			defer stuck.holdCalls()()
			fast1 := startBackend(t, "fast1", "127.0.0.1:0")
			fast2 := startBackend(t, "fast2", "127.0.0.1:0")
			c := newClient(t, "static:///"+stuck.addr+","+fast1.addr+","+fast2.addr, WithBalancer(bal), fastConnect)
			ctx := testCtx(t, 20*time.Second)
			eventually(t, 10*time.Second, "sessions to every server", func() bool {
				warm, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				echoClient{c}.Unary(warm, wrapperspb.String("x")) // the stuck server holds its until the timeout
				return len(stuck.srv.Peers()) == 1 && len(fast1.srv.Peers()) == 1 && len(fast2.srv.Peers()) == 1
			})
			time.Sleep(50 * time.Millisecond) // each session's ready by now
			callCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			var wg sync.WaitGroup
			start := stuck.runs.Load()
			for range 60 {
				done := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer close(done)
					echoClient{c}.Unary(callCtx, wrapperspb.String("x"))
				}()
				select { // one at a time, unless the call is stuck
				case <-done:
				case <-time.After(20 * time.Millisecond):
				}
			}
			got := stuck.runs.Load() - start
			cancel()
			wg.Wait()
			switch bal {
			case LeastOutstanding:
				if got > 2 {
					t.Errorf("the stuck server got %d of 60 calls, want at most 2", got)
				}
			case RoundRobin:
				if got < 15 {
					t.Errorf("the stuck server got %d of 60 calls under round robin, want its share", got)
				}
			}
		})
	}
}

// TestClientFailFastAndWaitForReady checks gRPC's two behaviours while no
// server can be reached: fail-fast calls fail at once with Unavailable
// and the reason; WaitForReady calls wait for their deadline.
func TestClientFailFastAndWaitForReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := newClient(t, addr, fastConnect)
	ctx := testCtx(t, 20*time.Second)
	eventually(t, 5*time.Second, "TransientFailure", func() bool {
		c.Connect()
		return c.GetState() == connectivity.TransientFailure
	})
	start := time.Now()
	_, err = echoClient{c}.Unary(ctx, wrapperspb.String("x"))
	wantStatus(t, err, codes.Unavailable, "refused")
	if d := time.Since(start); d > time.Second {
		t.Errorf("a fail-fast call took %v to fail", d)
	}
	if IsRetrySafe(err) {
		t.Error("a call that found no connection is IsRetrySafe, which promises a refusal by a server")
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = echoClient{c}.Unary(wctx, wrapperspb.String("x"), WaitForReady(true))
	wantStatus(t, err, codes.DeadlineExceeded, "refused")
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("a WaitForReady call gave up after %v, before its deadline", d)
	}
}

// TestClientTargets checks the targets NewClient takes, and those it
// refuses at once.
func TestClientTargets(t *testing.T) {
	srv := NewServer()
	srv.RegisterService(&echoDesc, defaultEcho)
	addr := serve(t, srv)
	ctx := testCtx(t, 20*time.Second)
	for _, target := range []string{addr, "dns:///" + addr, "passthrough:///" + addr, "static:///" + addr} {
		c := newClient(t, target, fastConnect)
		checkEcho(t, ctx, c, "server")
		c.Close()
	}
	for _, target := range []string{"nosuch://x/y", "nosuch:///y", "dns://[::1/x"} {
		if c, err := NewClient(target); err == nil {
			c.Close()
			t.Errorf("NewClient(%q) succeeded, want an error naming the scheme", target)
		}
	}
	for _, target := range []string{"static:///", "passthrough:///", "unix://"} {
		c := newClient(t, target)
		_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
		wantStatus(t, err, codes.Unavailable, "no address")
	}
}

// TestClientBadAddresses checks that garbage addresses, a resolver with no
// addresses, and one that fails give clear errors and bounded retries.
func TestClientBadAddresses(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	c := newClient(t, "static:///not-an-address,also:bad:port", fastConnect)
	eventually(t, 5*time.Second, "TransientFailure", func() bool {
		c.Connect()
		return c.GetState() == connectivity.TransientFailure
	})
	_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
	wantStatus(t, err, codes.Unavailable, "not-an-address")

	r := manual.NewBuilderWithScheme("empty")
	r.InitialState(resolver.State{})
	c = newClient(t, "empty:///x", WithResolvers(r), fastConnect)
	c.Connect()
	eventually(t, 5*time.Second, "TransientFailure", func() bool { return c.GetState() == connectivity.TransientFailure })
	_, err = echoClient{c}.Unary(ctx, wrapperspb.String("x"))
	wantStatus(t, err, codes.Unavailable, "no addresses")
	r.CC().ReportError(errors.New("registry unreachable"))
	_, err = echoClient{c}.Unary(ctx, wrapperspb.String("x"))
	wantStatus(t, err, codes.Unavailable, "registry unreachable")
}

// TestClientSilentServer checks that a server that accepts connections
// and never answers the preface costs bounded attempts, with backoff, and
// calls fail with Unavailable saying so.
func TestClientSilentServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var conns sync.WaitGroup
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns.Add(1)
			go func() { // read and never answer, until the client leaves
				defer conns.Done()
				defer conn.Close()
				buf := make([]byte, 1024)
				for {
					if _, err := conn.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	defer conns.Wait()
	defer ln.Close()
	c := newClient(t, "passthrough:///"+ln.Addr().String(),
		MuxConfig(&mux.Config{HandshakeTimeout: 300 * time.Millisecond}),
		WithConnectParams(ConnectParams{Backoff: backoffConfig(100*time.Millisecond, time.Second)}))
	ctx := testCtx(t, 20*time.Second)
	c.Connect()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		failing := c.GetState() == connectivity.TransientFailure
		start := time.Now()
		_, err = echoClient{c}.Unary(ctx, wrapperspb.String("x"))
		if failing {
			// Failed once, the Client stays in TransientFailure while it
			// tries again: fail-fast calls do not wait for the attempt.
			wantStatus(t, err, codes.Unavailable, "handshake")
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("a fail-fast call in TransientFailure took %v", d)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Close()
	// 2 s of 300 ms handshakes, then waits of 0.1 s growing by 1.6 to 1 s:
	// about 4 attempts; a loop would make hundreds.
	if n := accepted.Load(); n < 2 || n > 8 {
		t.Errorf("%d connection attempts in 2 s, want a handful", n)
	}
}

// TestClientEveryServerDownStaysIdle checks that a Client whose servers
// all refuse it backs off on each, rather than loop: few attempts, and
// little CPU, while calls wait.
func TestClientEveryServerDownStaysIdle(t *testing.T) {
	var targets []string
	var accepted atomic.Int64
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() { // a server that hangs up on every connection at once
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				conn.Close()
			}
		}()
		targets = append(targets, ln.Addr().String())
	}
	c := newClient(t, "static:///"+strings.Join(targets, ","), WithBalancer(RoundRobin),
		WithConnectParams(ConnectParams{Backoff: backoffConfig(100*time.Millisecond, time.Second)}))
	ctx := testCtx(t, 20*time.Second)
	before := cpuTime(t)
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 8 { // calls waiting all along
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := echoClient{c}.Unary(wctx, wrapperspb.String("x"), WaitForReady(true))
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("a waiting call while every server is down: %v, want DeadlineExceeded", err)
			}
		}()
	}
	wg.Wait()
	used, elapsed := cpuTime(t)-before, time.Since(start)
	t.Logf("%d attempts, %v of CPU in %v", accepted.Load(), used, elapsed)
	// Per address, 2 s of backoff from 100 ms by 1.6: about 6 attempts.
	if n := accepted.Load(); n > 3*8 {
		t.Errorf("%d connection attempts to 3 addresses in 2 s, want a handful each", n)
	}
	if used > elapsed/4 {
		t.Errorf("the process used %v of CPU in %v while every server was down", used, elapsed)
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestClientClose checks that Close lets calls in flight finish, up to its
// bound, fails new calls with ErrConnClosing, and leaves nothing running.
func TestClientClose(t *testing.T) {
	b := startBackend(t, "b", "127.0.0.1:0")
	c, err := NewClient("passthrough:///"+b.addr, MuxConfig(&mux.Config{CloseTimeout: 500 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	checkEchoName(t, ctx, c, "b")
	release := b.holdCalls()
	finishes := async(func() error {
		_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
		return err
	})
	eventually(t, 5*time.Second, "the call to run", func() bool { return b.runs.Load() == 2 })
	closed := async(func() error { return c.Close() })
	time.Sleep(100 * time.Millisecond)
	_, err = echoClient{c}.Unary(ctx, wrapperspb.String("x"))
	wantStatus(t, err, codes.Canceled, "closing")
	if !errors.Is(err, ErrConnClosing) {
		t.Errorf("a call after Close: %v, want ErrConnClosing", err)
	}
	release()
	if err := await(t, finishes, 5*time.Second, "the call in flight"); err != nil {
		t.Errorf("a call in flight during Close: %v", err)
	}
	await(t, closed, 5*time.Second, "Close")
	if got := c.GetState(); got != connectivity.Shutdown {
		t.Errorf("state after Close: %v", got)
	}

	// A call that never ends is ended at Close's bound.
	c, err = NewClient("passthrough:///"+b.addr, MuxConfig(&mux.Config{CloseTimeout: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	checkEchoName(t, ctx, c, "b")
	defer b.holdCalls()()
	stuck := async(func() error {
		_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
		return err
	})
	eventually(t, 5*time.Second, "the call to run", func() bool { return b.runs.Load() == 4 })
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a bound of 300ms", d)
	}
	if err := await(t, stuck, 5*time.Second, "the stuck call"); err == nil {
		t.Error("a call still running at Close's bound succeeded")
	}
}

// TestClientStates checks the connectivity states a Client moves through.
func TestClientStates(t *testing.T) {
	b := startBackend(t, "b", "127.0.0.1:0")
	c := newClient(t, "passthrough:///"+b.addr, fastConnect)
	ctx := testCtx(t, 20*time.Second)
	if s := c.GetState(); s != connectivity.Idle {
		t.Fatalf("new Client: %v", s)
	}
	c.Connect()
	for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
		if s != connectivity.Connecting {
			t.Fatalf("connecting Client: %v", s)
		}
		if !c.WaitForStateChange(ctx, s) {
			t.Fatal("never Ready")
		}
	}
	b.stop()
	if !c.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatal("still Ready after the server stopped")
	}
	eventually(t, 5*time.Second, "TransientFailure", func() bool { return c.GetState() == connectivity.TransientFailure })
	c.Close()
	if s := c.GetState(); s != connectivity.Shutdown {
		t.Errorf("closed Client: %v", s)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if c.WaitForStateChange(short, connectivity.Shutdown) {
		t.Error("a Shutdown Client changed state")
	}
}

// TestClientHealthCheck checks that WithHealthCheck keeps calls off a
// server while its check says not serving, and back on when it serves.
func TestClientHealthCheck(t *testing.T) {
	a := startBackend(t, "a", "127.0.0.1:0")
	b := startBackend(t, "b", "127.0.0.1:0")
	var mu sync.Mutex
	reports := map[string]func(bool){}
	check := func(ctx context.Context, p *Peer, report func(bool)) error {
		mu.Lock()
		reports[p.RemoteAddr().String()] = report
		mu.Unlock()
		report(true)
		<-ctx.Done()
		return nil
	}
	c := newClient(t, "static:///"+a.addr+","+b.addr, WithBalancer(RoundRobin), WithHealthCheck(check), fastConnect)
	ctx := testCtx(t, 20*time.Second)
	seen := map[string]bool{}
	eventually(t, 10*time.Second, "both backends to answer", func() bool {
		seen[answerer(t, ctx, c)] = true
		return len(seen) == 2
	})
	mu.Lock()
	reports[a.addr](false)
	mu.Unlock()
	for range 20 {
		if name := answerer(t, ctx, c); name != "b" {
			t.Fatalf("a call went to %q, which reports not serving", name)
		}
	}
	mu.Lock()
	reports[b.addr](false)
	mu.Unlock()
	_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
	wantStatus(t, err, codes.Unavailable, "not serving")
	mu.Lock()
	reports[a.addr](true)
	mu.Unlock()
	checkEchoName(t, ctx, c, "a")
}

// TestClientInterceptorsRunOncePerCall checks that a Client's interceptors
// see each call once, with the Client as the ClientConnInterface.
func TestClientInterceptorsRunOncePerCall(t *testing.T) {
	b := startBackend(t, "b", "127.0.0.1:0")
	var unary atomic.Int64
	var cc ClientConnInterface
	c := newClient(t, "passthrough:///"+b.addr, ChainUnaryClient(func(ctx context.Context, method string, req, reply any, conn ClientConnInterface, invoker UnaryInvoker, opts ...CallOption) error {
		unary.Add(1)
		cc = conn
		return invoker(ctx, method, req, reply, conn, opts...)
	}))
	ctx := testCtx(t, 10*time.Second)
	for range 5 {
		checkEchoName(t, ctx, c, "b")
	}
	if n := unary.Load(); n != 5 {
		t.Errorf("the interceptor ran %d times for 5 calls", n)
	}
	if cc != ClientConnInterface(c) {
		t.Errorf("the interceptor saw %T, want the Client", cc)
	}
}

// TestClientAllocatesNoMoreThanAPeer checks that a call through a Client
// costs no allocation more than the same call on a bare Peer.
func TestClientAllocatesNoMoreThanAPeer(t *testing.T) {
	srv := NewServer()
	srv.RegisterService(&echoDesc, defaultEcho)
	addr := serve(t, srv)
	p := dial(t, addr)
	c := newClient(t, "passthrough:///"+addr)
	ctx := context.Background()
	req := wrapperspb.String("x")
	measure := func(cc ClientConnInterface) float64 {
		reply := new(wrapperspb.StringValue)
		call := func() {
			if err := cc.Invoke(ctx, "/test.Echo/Unary", req, reply); err != nil {
				t.Fatal(err)
			}
		}
		call()
		// testing.AllocsPerRun rounds down; the fraction matters here.
		const runs = 500
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			call()
		}
		runtime.ReadMemStats(&after)
		return float64(after.Mallocs-before.Mallocs) / runs
	}
	// The race detector drops pooled buffers at random: the least of a few
	// rounds, alternated, is each side's cost.
	onPeer, onClient := measure(p), measure(c)
	for range 4 {
		onPeer, onClient = min(onPeer, measure(p)), min(onClient, measure(c))
	}
	t.Logf("allocations per call: Peer %.2f, Client %.2f", onPeer, onClient)
	if onClient > onPeer+0.5 {
		t.Errorf("a call through a Client makes %.2f allocations, a bare Peer %.2f", onClient, onPeer)
	}
}

// TestClientRotatesAgedSessions checks that a server's MaxConnectionAge
// moves a busy Client to new sessions without failing a call, or running
// one twice.
func TestClientRotatesAgedSessions(t *testing.T) {
	b := startBackend(t, "b", "127.0.0.1:0", MaxConnectionAge(150*time.Millisecond))
	var sessions atomic.Int64
	c := newClient(t, "passthrough:///"+b.addr, fastConnect)
	ctx := testCtx(t, 20*time.Second)
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(1200 * time.Millisecond)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				calls.Add(1)
				if _, err := (echoClient{c}).Unary(ctx, wrapperspb.String("x")); err != nil {
					failed.Add(1)
					t.Errorf("a call failed while sessions aged out: %v", err)
					return
				}
			}
		}()
	}
	go func() { // count the sessions the server sees
		seen := map[*Peer]bool{}
		for time.Now().Before(stop) {
			for _, p := range b.srv.Peers() {
				if !seen[p] {
					seen[p] = true
					sessions.Add(1)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()
	if n := sessions.Load(); n < 4 {
		t.Errorf("%d sessions in 1.2 s with an age of 150 ms, want several", n)
	}
	if got, want := b.runs.Load(), calls.Load()-failed.Load(); got != want {
		t.Errorf("handlers ran %d times for %d successful calls", got, want)
	}
	t.Logf("%d calls over %d sessions", calls.Load(), sessions.Load())
}

// TestClientTLS checks that a Client verifies each server against the
// name its address carries, else WithTLS's, and that mutual TLS holds on
// every session.
func TestClientTLS(t *testing.T) {
	pki := newTestPKI(t)
	serverTLS := pki.mutualServerTLS()
	serverTLS.Certificates = []tls.Certificate{pki.ca.issue(t, leafSpec{name: serverName, dns: []string{"api.fleet.test"}})}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer()
	srv.RegisterService(&echoDesc, defaultEcho)
	serveOn(t, srv, ln)
	addr := ln.Addr().String()
	ctx := testCtx(t, 20*time.Second)

	// By its IP, the server's certificate does not verify.
	c := newClient(t, "static:///"+addr, WithTLS(pki.clientTLS(pki.client)), fastConnect)
	eventually(t, 5*time.Second, "TransientFailure", func() bool {
		c.Connect()
		return c.GetState() == connectivity.TransientFailure
	})
	_, err = echoClient{c}.Unary(ctx, wrapperspb.String("x"))
	wantStatus(t, err, codes.Unavailable, "certificate")

	// The address's server name, as a resolver gives it.
	r := manual.NewBuilderWithScheme("named")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: addr, ServerName: "api.fleet.test"}}})
	c = newClient(t, "named:///api", WithResolvers(r), WithTLS(pki.clientTLS(pki.client)), fastConnect)
	checkEcho(t, ctx, c, "server")

	// WithTLS's own ServerName.
	named := pki.clientTLS(pki.client)
	named.ServerName = "api.fleet.test"
	c = newClient(t, "static:///"+addr, WithTLS(named), fastConnect)
	checkEcho(t, ctx, c, "server")
	for _, p := range srv.Peers() {
		if tc, ok := p.Session().Conn().(*tls.Conn); !ok || len(tc.ConnectionState().PeerCertificates) == 0 {
			t.Errorf("a session without the client's certificate: %v", p.RemoteAddr())
		}
	}
}

// TestTargetAuthority checks the name TLS verifies a DNS target's servers
// against: the target's host, never an IP or another scheme's endpoint.
func TestTargetAuthority(t *testing.T) {
	for target, want := range map[string]string{
		"api.example.com:443":                "api.example.com",
		"dns:///api.example.com:443":         "api.example.com",
		"dns://8.8.8.8/api.example.com":      "api.example.com",
		"dns:///_api._tcp.example.com":       "_api._tcp.example.com",
		"127.0.0.1:80":                       "",
		"[::1]:80":                           "",
		"static:///a.example.com:1,b:2":      "",
		"passthrough:///api.example.com:443": "",
	} {
		rt, _, err := parseTarget(target, nil)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if got := targetAuthority(rt); got != want {
			t.Errorf("targetAuthority(%s) = %q, want %q", target, got, want)
		}
	}
}

// TestClientOverUnixSocket checks unix: targets, in both of gRPC's forms.
func TestClientOverUnixSocket(t *testing.T) {
	path := t.TempDir() + "/muxrpc.sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer()
	srv.RegisterService(&echoDesc, defaultEcho)
	serveOn(t, srv, ln)
	ctx := testCtx(t, 10*time.Second)
	for _, target := range []string{"unix://" + path, "unix:" + path} {
		c := newClient(t, target)
		checkEcho(t, ctx, c, "server")
		c.Close()
	}
}

// TestClientPickFirstOrderAndStagger checks PickFirst's order, the first
// address that takes a session, and that an address that swallows
// connections delays the next one by a quarter of a second, not by the
// handshake's timeout (gRPC's Happy Eyeballs).
func TestClientPickFirstOrderAndStagger(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	a := startBackend(t, "a", "127.0.0.1:0")
	b := startBackend(t, "b", "127.0.0.1:0")
	c := newClient(t, "static:///"+a.addr+","+b.addr, fastConnect)
	for range 20 {
		checkEchoName(t, ctx, c, "a")
	}
	c.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	go func() { // accept and say nothing, until the client leaves
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() {
				defer held.Done()
				defer conn.Close()
				io.Copy(io.Discard, conn)
			}()
		}
	}()
	defer held.Wait()
	defer silent.Close()
	c = newClient(t, "static:///"+silent.Addr().String()+","+b.addr, fastConnect)
	start := time.Now()
	checkEchoName(t, ctx, c, "b")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the first call took %v behind an address that never answers", d)
	}
	c.Close()
}
