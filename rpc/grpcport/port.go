package grpcport

import (
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
)

// Defaults of the port's options.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	// MaxPendingConns bounds the connections whose protocol is not yet
	// known.
	MaxPendingConns = 1024
)

// A Server serves an rpc.Server's services by muxrpc and by gRPC on the
// same listeners.
type Server struct {
	rpc              *rpc.Server
	grpc             *grpc.Server
	tls              *tls.Config
	handshakeTimeout time.Duration

	muxConns  *connQueue    // connections that speak muxrpc, for rpc.Server.Serve
	grpcConns *connQueue    // connections that speak HTTP/2, for grpc.Server.Serve
	pending   chan struct{} // a token per connection being told apart
	quit      chan struct{} // closed when the Server stops
	start     sync.Once
	serving   sync.WaitGroup // the two servers' Serve loops
	sniffing  sync.WaitGroup // the connections being told apart

	mu        sync.Mutex
	stopped   bool
	listeners map[net.Listener]struct{}
}

// An Option configures a Server.
type Option func(*config)

type config struct {
	tls              *tls.Config
	handshakeTimeout time.Duration
	grpcOptions      []grpc.ServerOption
}

// WithTLS makes the port speak TLS with cfg, and only TLS: a client that
// negotiates "h2" by ALPN is served gRPC, any other muxrpc. The port adds
// "h2" to a copy of cfg's NextProtos if it is missing.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) { c.tls = cfg }
}

// HandshakeTimeout bounds the time a connection has to show its protocol:
// its first 8 bytes or, with TLS, its TLS handshake. Default 10 s. The
// protocols' own handshakes have their own bounds after it (muxrpc's
// mux.Config.HandshakeTimeout; gRPC's grpc.ConnectionTimeout, which the
// port sets to the same value unless GRPCOptions says otherwise).
func HandshakeTimeout(d time.Duration) Option {
	return func(c *config) { c.handshakeTimeout = d }
}

// GRPCOptions passes options to the gRPC-Go server that serves the HTTP/2
// side: keepalive enforcement, flow control windows and the like. The
// port gives it the rpc.Server's message size limits itself (which these
// options may override). Interceptors belong on the rpc.Server, which
// runs them for both protocols, and credentials on WithTLS.
func GRPCOptions(opts ...grpc.ServerOption) Option {
	return func(c *config) { c.grpcOptions = append(c.grpcOptions, opts...) }
}

// New returns a Server that serves srv's services, by muxrpc and by gRPC.
// Register srv's services before the first Serve: Serve hands srv's
// services to gRPC, and srv stops taking registrations once it serves.
func New(srv *rpc.Server, opts ...Option) *Server {
	cfg := config{handshakeTimeout: DefaultHandshakeTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.handshakeTimeout <= 0 {
		cfg.handshakeTimeout = DefaultHandshakeTimeout
	}
	recv, send := srv.MessageSizeLimits()
	gopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(recv),
		grpc.MaxSendMsgSize(send),
		grpc.ConnectionTimeout(cfg.handshakeTimeout),
	}
	s := &Server{
		rpc:              srv,
		handshakeTimeout: cfg.handshakeTimeout,
		pending:          make(chan struct{}, MaxPendingConns),
		quit:             make(chan struct{}),
		listeners:        map[net.Listener]struct{}{},
	}
	if cfg.tls != nil {
		s.tls = cfg.tls.Clone()
		if !slices.Contains(s.tls.NextProtos, "h2") {
			s.tls.NextProtos = append(s.tls.NextProtos, "h2")
		}
		gopts = append(gopts, grpc.Creds(handshakenTLS{}))
	}
	s.grpc = grpc.NewServer(append(gopts, cfg.grpcOptions...)...)
	return s
}

// ErrServerStopped is returned by Serve once the Server has stopped.
var ErrServerStopped = rpc.ErrServerStopped

// Serve accepts connections on lis, tells their protocols apart, and
// serves each by its protocol, until lis fails or the Server stops. It
// returns ErrServerStopped after Stop or GracefulStop, and otherwise lis's
// error. A Server may serve several listeners at once.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		lis.Close()
		return ErrServerStopped
	}
	s.listeners[lis] = struct{}{}
	s.mu.Unlock()
	s.start.Do(func() { s.startServers(lis.Addr()) })
	defer func() {
		s.mu.Lock()
		delete(s.listeners, lis)
		s.mu.Unlock()
		lis.Close()
	}()
	var delay time.Duration // after a temporary accept error, as net/http does
	for {
		select { // room for one more connection to tell apart
		case s.pending <- struct{}{}:
		case <-s.quit:
			return ErrServerStopped
		}
		conn, err := lis.Accept()
		if err != nil {
			<-s.pending
			if s.isStopped() {
				return ErrServerStopped
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.stopped { // stopListening waits for the connections being told apart: add none after it
			s.mu.Unlock()
			conn.Close()
			<-s.pending
			return ErrServerStopped
		}
		s.sniffing.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.sniffing.Done()
			defer func() { <-s.pending }()
			s.route(conn)
		}()
	}
}

// startServers registers the rpc.Server's services on the gRPC server and
// starts both servers' Serve loops on the port's queues of connections.
func (s *Server) startServers(addr net.Addr) {
	unary, stream := s.rpc.Interceptors()
	b := bridge{srv: s.rpc, unary: unary, stream: stream}
	for _, svc := range s.rpc.Services() {
		s.grpc.RegisterService(b.serviceDesc(svc.Desc), svc.Impl)
	}
	s.muxConns, s.grpcConns = newConnQueue(addr), newConnQueue(addr)
	s.serving.Add(2)
	go func() {
		defer s.serving.Done()
		s.rpc.Serve(s.muxConns)
	}()
	go func() {
		defer s.serving.Done()
		s.grpc.Serve(s.grpcConns)
	}()
}

func (s *Server) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// stopListening closes the listeners and the queues, so that no
// connection is accepted or routed any more, and waits for the
// connections being told apart.
func (s *Server) stopListening() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.quit)
	}
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.start.Do(func() {}) // a Serve that comes later starts nothing
	if s.muxConns != nil {
		s.muxConns.Close()
		s.grpcConns.Close()
	}
	s.sniffing.Wait()
}

// GracefulStop stops accepting connections and lets both protocols
// finish the calls in flight, as rpc.Server.GracefulStop and
// grpc.Server.GracefulStop do, and returns once both have.
func (s *Server) GracefulStop() {
	s.stopListening()
	var wg sync.WaitGroup
	wg.Go(s.rpc.GracefulStop)
	wg.Go(s.grpc.GracefulStop)
	wg.Wait()
	s.serving.Wait()
}

// Stop closes every connection of both protocols at once, ending the
// calls in flight, and returns once both servers have stopped.
func (s *Server) Stop() {
	s.stopListening()
	var wg sync.WaitGroup
	wg.Go(s.rpc.Stop)
	wg.Go(s.grpc.Stop)
	wg.Wait()
	s.serving.Wait()
}
