// Command kcp runs muxrpc over KCP (github.com/xtaci/kcp-go) with the smux
// transport, through a UDP relay that drops and delays packets: calls in
// both directions over a lossy link.
//
// KCP is a reliable, ordered protocol over UDP, run in user space, that
// recovers from losses sooner than TCP: in the no-delay mode set here it
// resends a segment after two later ones were acknowledged or after a
// timeout that grows by half instead of doubling, and, with its congestion
// window off, it does not halve its rate on a loss. On a link that loses
// packets or has a long round trip (mobile, satellite, long-haul Wi-Fi),
// that keeps latency low and steady where TCP stalls. It does not remove
// head-of-line blocking: smux runs every stream of the session over one
// ordered KCP connection, as over one TCP connection, so a lost packet
// still holds up the streams behind it, but for a round trip or so rather
// than for TCP's slower recovery. The price is bandwidth, for the extra
// resends and acknowledgements (10-20% more than TCP, by KCP's authors'
// measure, and more with forward error correction), CPU, since the
// protocol and its timers run in the process, and UDP's lot: no kernel
// offloads, middleboxes that know nothing of it, and networks that throttle
// or block it. Without congestion control it also competes unfairly with
// TCP on a shared bottleneck. On a clean, low-latency network TCP or TLS
// (rpc.Dial) is the better choice; use KCP where the link is the problem.
// mux.Smux speaks smux protocol v2, the multiplexer that kcptun and other
// KCP programs run, so one KCP connection carries all the calls of a
// session, in both directions.
//
// The example is a module of its own, so that kcp-go and its dependencies
// stay out of the module graph of every program that uses muxrpc; run it
// from its folder. By default the server, a relay and the client run in
// one process on loopback; the relay, a small UDP forwarder between the
// client and the server, drops a share of the packets in each direction and
// delays the others, with a seeded random source so that runs are
// repeatable, more or less (KCP's timers decide which packets there are):
//
//	cd examples/kcp && go run .
//	cd examples/kcp && go run . -loss 0.2 -delay 50ms -calls 20
//
// or in two processes, the relay running in the client's:
//
//	go run . -listen 127.0.0.1:7070
//	go run . -connect 127.0.0.1:7070 -loss 0.05
//
// The client waits for the server's greeting (the server calls the client's
// Notifier when it connects), makes -calls unary calls, one server stream
// and one call whose handler calls the client back, and prints each answer
// and how many packets the relay dropped. SIGINT or SIGTERM stops the server
// with GracefulStop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/xtaci/kcp-go/v5"
	"google.golang.org/protobuf/types/known/emptypb"
)

// muxConfig is the session configuration of both sides: smux framing, which
// KCP programs speak.
var muxConfig = &mux.Config{Transport: mux.Smux}

// options are the client's settings, from the flags.
type options struct {
	loss  float64       // share of packets the relay drops, each direction
	delay time.Duration // how long the relay holds every packet it forwards
	seed  uint64        // the relay's random source
	calls int           // how many unary calls the client makes
}

func main() {
	listen := flag.String("listen", "", "only serve, on this UDP address")
	connect := flag.String("connect", "", "only run the client (and the relay), against this UDP address")
	var o options
	flag.Float64Var(&o.loss, "loss", 0.05, "share of packets the relay drops in each direction, from 0 to 1")
	flag.DurationVar(&o.delay, "delay", 20*time.Millisecond, "how long the relay delays each packet, each direction")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the relay's random drops")
	flag.IntVar(&o.calls, "calls", 10, "unary calls the client makes")
	flag.Parse()
	if o.loss < 0 || o.loss >= 1 {
		log.Fatalf("-loss %v: want a share from 0 to 1, 1 excluded", o.loss)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *listen != "":
		var lis *kcp.Listener
		if lis, err = listenKCP(*listen); err == nil {
			log.Printf("serving KCP on udp %s", lis.Addr())
			err = serveUntilSignal(ctx, os.Stdout, lis)
		}
	case *connect != "":
		err = runClient(ctx, &syncWriter{w: os.Stdout}, *connect, o)
	default:
		err = runBoth(ctx, os.Stdout, o)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runBoth serves KCP on a loopback port and runs the client against it,
// through the relay.
func runBoth(ctx context.Context, out io.Writer, o options) error {
	out = &syncWriter{w: out}
	lis, err := listenKCP("127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := newServer()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(kcpListener{lis}) }()
	err = runClient(ctx, out, lis.Addr().String(), o)
	srv.GracefulStop()
	return errors.Join(err, <-served) // Serve returns nil after GracefulStop
}

// serveUntilSignal serves on lis until ctx ends (SIGINT or SIGTERM), then
// stops gracefully.
func serveUntilSignal(ctx context.Context, out io.Writer, lis *kcp.Listener) error {
	srv := newServer()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(kcpListener{lis}) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		fmt.Fprintln(out, "server: stopping, letting the calls in flight finish")
		srv.GracefulStop()
		return <-served
	}
}

// listenKCP listens for KCP sessions on a UDP address, without encryption
// (nil BlockCrypt; use kcp.NewAESBlockCrypt, say, or TLS inside) or forward
// error correction (0 data and parity shards: KCP's retransmissions alone
// recover losses; 10 and 3 would add 30% of parity packets to recover most
// losses with no retransmission at all).
func listenKCP(addr string) (*kcp.Listener, error) {
	return kcp.ListenWithOptions(addr, nil, 0, 0)
}

// kcpListener is a net.Listener of tuned KCP sessions, for rpc.Server.Serve.
type kcpListener struct{ *kcp.Listener }

func (l kcpListener) Accept() (net.Conn, error) {
	conn, err := l.AcceptKCP()
	if err != nil {
		return nil, err
	}
	tune(conn)
	return conn, nil
}

// tune sets the KCP parameters of a session, the same on both sides.
func tune(conn *kcp.UDPSession) {
	// Stream mode merges writes into full segments, as smux's frames want:
	// a byte stream, like TCP's, rather than a message per write.
	conn.SetStreamMode(true)
	// kcptun's "fast2" profile: no delayed acknowledgement timer, an
	// internal update every 10 ms, fast resend after 2 duplicate
	// acknowledgements, and no congestion window (the loss is the link's
	// and not congestion: backing off would only slow the recovery).
	conn.SetNoDelay(1, 10, 2, 1)
	conn.SetACKNoDelay(true)
	// 256 segments of 1400 bytes in flight each way: some 350 KiB, smux's
	// stream window and then some, at 40 ms of round trip.
	conn.SetWindowSize(256, 256)
	conn.SetWriteDelay(false)
}

// newServer returns the Echo server over smux; it greets each client that
// connects through the client's own Notifier.
func newServer() *rpc.Server {
	srv := rpc.NewServer(
		rpc.MuxConfig(muxConfig),
		rpc.OnPeer(func(p *rpc.Peer) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := echov1.NewNotifierClient(p).Notify(ctx, &echov1.Notification{Message: "welcome over KCP"}); err != nil {
				log.Printf("server: greeting failed: %v", err)
			}
		}),
	)
	echov1.RegisterEchoServer(srv, echoServer{})
	return srv
}

// runClient starts the relay in front of addr, dials KCP through it, runs a
// smux session with the client's Notifier on it, and makes its calls.
func runClient(ctx context.Context, out io.Writer, addr string, o options) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	relay, err := startRelay(addr, o.loss, o.delay, o.seed)
	if err != nil {
		return err
	}
	defer func() {
		relay.close()
		fmt.Fprintf(out, "relay: dropped %d of %d packets (-loss %v, -delay %v)\n", relay.dropped.Load(), relay.seen.Load(), o.loss, o.delay)
	}()

	// rpc.Dial speaks TCP and TLS; over another transport, make the
	// connection, start the session on it, and put a Peer on the session.
	conn, err := kcp.DialWithOptions(relay.addr(), nil, 0, 0)
	if err != nil {
		return err
	}
	tune(conn)
	sess, err := mux.Client(conn, muxConfig) // the session owns conn from now on
	if err != nil {
		conn.Close()
		return err
	}
	callbacks := rpc.NewServer()
	n := &notifier{out: out, welcomed: make(chan struct{})}
	echov1.RegisterNotifierServer(callbacks, n)
	peer := rpc.NewPeer(sess, rpc.WithServices(callbacks)) // the Peer owns sess
	defer peer.Shutdown(ctx)

	select { // the server's greeting, pushed outside any call
	case <-n.welcomed:
	case <-ctx.Done():
		return ctx.Err()
	}
	echo := echov1.NewEchoClient(peer)

	for i := range o.calls {
		resp, err := echo.Unary(ctx, &echov1.EchoRequest{Message: fmt.Sprintf("call %d", i)})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "unary: %s\n", resp.Message)
	}

	stream, err := echo.ServerStream(ctx, &echov1.ServerStreamRequest{Message: "tick", Count: 5})
	if err != nil {
		return err
	}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "server stream: %s #%d\n", r.Message, r.Sequence)
	}

	ann, err := echo.Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"first", "second", "third"}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "announce: the server delivered %d notifications to this client\n", ann.Delivered)
	return nil
}

// echoServer implements Echo. Announce calls the caller back.
type echoServer struct {
	echov1.UnimplementedEchoServer
}

func (echoServer) Unary(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	return &echov1.EchoResponse{Message: req.Message}, nil
}

func (echoServer) ServerStream(req *echov1.ServerStreamRequest, stream echov1.Echo_ServerStreamServer) error {
	for i := range req.Count {
		if err := stream.Send(&echov1.EchoResponse{Message: req.Message, Sequence: int64(i)}); err != nil {
			return err
		}
	}
	return nil
}

// Announce calls the caller's Notifier, over the caller's own KCP session.
func (echoServer) Announce(ctx context.Context, req *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	caller := echov1.NewNotifierClient(rpc.PeerFromContext(ctx))
	var delivered int32
	for i, m := range req.Messages {
		if _, err := caller.Notify(ctx, &echov1.Notification{Message: m, Sequence: int64(i)}); err != nil {
			return nil, err
		}
		delivered++
	}
	return &echov1.AnnounceResponse{Delivered: delivered}, nil
}

// notifier is the service the client exposes to the server.
type notifier struct {
	echov1.UnimplementedNotifierServer
	out      io.Writer
	once     sync.Once
	welcomed chan struct{}
}

func (n *notifier) Notify(ctx context.Context, note *echov1.Notification) (*emptypb.Empty, error) {
	fmt.Fprintf(n.out, "client: the server called back: %q\n", note.Message)
	n.once.Do(func() { close(n.welcomed) })
	return &emptypb.Empty{}, nil
}

// relay forwards UDP packets between one client and a server, dropping a
// share of them and delaying the others, as a lossy, long link would.
type relay struct {
	front *net.UDPConn // where the client sends
	back  *net.UDPConn // connected to the server
	// client is the address of the client, learnt from its first packet.
	client atomic.Pointer[net.UDPAddr]

	seen, dropped atomic.Int64
	wg            sync.WaitGroup
}

// packet is a datagram on its way, to be sent at due.
type packet struct {
	due  time.Time
	data []byte
}

// startRelay listens on a loopback port and forwards to server.
func startRelay(server string, loss float64, delay time.Duration, seed uint64) (*relay, error) {
	saddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	back, err := net.DialUDP("udp", nil, saddr)
	if err != nil {
		front.Close()
		return nil, err
	}
	r := &relay{front: front, back: back}
	toServer := make(chan packet, 4096)
	toClient := make(chan packet, 4096)
	// Each direction has its own random source, used by one goroutine, so
	// that the same packets in the same order meet the same fate.
	upRNG := rand.New(rand.NewPCG(seed, 1))
	downRNG := rand.New(rand.NewPCG(seed, 2))
	r.wg.Add(4)
	go func() { // client -> relay
		defer r.wg.Done()
		defer close(toServer)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.client.Store(from)
			r.forward(toServer, buf[:n], upRNG, loss, delay)
		}
	}()
	go func() { // server -> relay
		defer r.wg.Done()
		defer close(toClient)
		buf := make([]byte, 64<<10)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			r.forward(toClient, buf[:n], downRNG, loss, delay)
		}
	}()
	go func() { // relay -> server
		defer r.wg.Done()
		for p := range toServer {
			time.Sleep(time.Until(p.due))
			back.Write(p.data)
		}
	}()
	go func() { // relay -> client
		defer r.wg.Done()
		for p := range toClient {
			time.Sleep(time.Until(p.due))
			if c := r.client.Load(); c != nil {
				front.WriteToUDP(p.data, c)
			}
		}
	}()
	return r, nil
}

// forward drops the packet at random, or queues a copy of it to leave after
// delay; a full queue drops it too, as a router's would.
func (r *relay) forward(q chan<- packet, data []byte, rng *rand.Rand, loss float64, delay time.Duration) {
	r.seen.Add(1)
	if rng.Float64() < loss {
		r.dropped.Add(1)
		return
	}
	select {
	case q <- packet{due: time.Now().Add(delay), data: append([]byte(nil), data...)}:
	default:
		r.dropped.Add(1)
	}
}

// addr is where the client dials: the relay's front socket.
func (r *relay) addr() string { return r.front.LocalAddr().String() }

// close stops forwarding and waits for the relay's goroutines.
func (r *relay) close() {
	r.front.Close()
	r.back.Close()
	r.wg.Wait()
}

// syncWriter serializes writes from the goroutines of both sides.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
