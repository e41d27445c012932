package rpc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"

	"github.com/muxrpc/muxrpc/mux"
)

// A Server holds services and serves them on every session it accepts.
// Each accepted session gets a Peer, through which handlers and OnPeer
// call back into the client.
type Server struct {
	cfg       serverConfig
	unaryInt  UnaryServerInterceptor
	streamInt StreamServerInterceptor
	services  map[string]*service
	methods   map[string]*method // by full method name, "/pkg.Service/Method"
	mu        sync.Mutex
	serving   bool
	stopping  bool
	listeners map[*mux.Listener]struct{}
	peers     map[*Peer]struct{} // every session served, admitted or still in its hello
	authSlots chan struct{}      // a token per Authenticator running; see Authenticator
	dir       *Directory

	halt        context.Context // ended by Stop: a GracefulStop waits no more
	haltNow     context.CancelFunc
	stopped     chan struct{} // closed once a Stop or GracefulStop has completed
	stoppedOnce sync.Once
}

type service struct {
	desc *ServiceDesc
	impl any
}

// method is one registered method, unary or streaming.
type method struct {
	fullName string
	svc      *service
	unary    *MethodDesc
	stream   *StreamDesc
}

// NewServer returns a Server with no services; register them before
// serving.
func NewServer(opts ...ServerOption) *Server {
	s := &Server{
		cfg:       serverConfig{peer: newPeerConfig()},
		services:  map[string]*service{},
		methods:   map[string]*method{},
		listeners: map[*mux.Listener]struct{}{},
		peers:     map[*Peer]struct{}{},
		stopped:   make(chan struct{}),
	}
	s.halt, s.haltNow = context.WithCancel(context.Background())
	for _, o := range opts {
		o.applyToServer(&s.cfg)
	}
	s.dir = newDirectory(s, s.cfg.duplicates)
	if s.cfg.auth != nil {
		s.authSlots = make(chan struct{}, cmp.Or(s.cfg.peer.mux.MaxPendingHandshakes, defaultAuthSlots))
	}
	s.unaryInt = chainUnaryServer(s.cfg.unaryServer)
	s.streamInt = chainStreamServer(s.cfg.streamServer)
	return s
}

// RegisterService registers a service and its implementation. It panics if
// impl does not implement desc.HandlerType, if the service is registered
// twice, or once the Server serves: programming errors, as in gRPC.
func (s *Server) RegisterService(desc *ServiceDesc, impl any) {
	if impl != nil && desc.HandlerType != nil {
		ht := reflect.TypeOf(desc.HandlerType).Elem()
		if !reflect.TypeOf(impl).Implements(ht) {
			panic(fmt.Sprintf("rpc: RegisterService: %T does not implement %v", impl, ht))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		panic("rpc: RegisterService after the Server started serving")
	}
	if _, dup := s.services[desc.ServiceName]; dup {
		panic("rpc: RegisterService: service " + desc.ServiceName + " registered twice")
	}
	svc := &service{desc: desc, impl: impl}
	s.services[desc.ServiceName] = svc
	for i := range desc.Methods {
		m := &desc.Methods[i]
		name := "/" + desc.ServiceName + "/" + m.MethodName
		s.methods[name] = &method{fullName: name, svc: svc, unary: m}
	}
	for i := range desc.Streams {
		st := &desc.Streams[i]
		name := "/" + desc.ServiceName + "/" + st.StreamName
		s.methods[name] = &method{fullName: name, svc: svc, stream: st}
	}
}

// GetServiceInfo reports the registered services by name.
func (s *Server) GetServiceInfo() map[string]ServiceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := make(map[string]ServiceInfo, len(s.services))
	for name, svc := range s.services {
		var ms []MethodInfo
		for _, m := range svc.desc.Methods {
			ms = append(ms, MethodInfo{Name: m.MethodName})
		}
		for _, st := range svc.desc.Streams {
			ms = append(ms, MethodInfo{Name: st.StreamName, IsClientStream: st.ClientStreams, IsServerStream: st.ServerStreams})
		}
		info[name] = ServiceInfo{Methods: ms, Metadata: svc.desc.Metadata}
	}
	return info
}

// startServing freezes the registry: lookups then need no lock.
func (s *Server) startServing() {
	s.mu.Lock()
	s.serving = true
	s.mu.Unlock()
}

// lookup finds a method by its full name without allocating.
func (s *Server) lookup(name []byte) *method { return s.methods[string(name)] }

// unknownMethod says what is unknown about a method name: the service or
// the method.
func (s *Server) unknownMethod(name string) string {
	svc, _, ok := strings.Cut(strings.TrimPrefix(name, "/"), "/")
	if !ok {
		return fmt.Sprintf("malformed method name %q", name)
	}
	if _, known := s.services[svc]; known {
		return fmt.Sprintf("unknown method %s", name)
	}
	return fmt.Sprintf("unknown service %s", svc)
}

// ErrServerStopped is returned by Serve and ServeSession called after Stop
// or GracefulStop.
var ErrServerStopped = errors.New("rpc: server stopped")

// Serve accepts connections on lis and serves each on its own session,
// until lis fails or the Server stops. As in gRPC, it returns nil after
// Stop or GracefulStop, once the stop has completed (so that
// log.Fatal(srv.Serve(lis)) lets a GracefulStop drain), the listener's
// error when lis fails, and ErrServerStopped when called after a stop.
// Plain and TLS listeners both work; lis is closed when Serve returns.
func (s *Server) Serve(lis net.Listener) error {
	ml, err := mux.NewListener(lis, s.cfg.peer.muxConfig())
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		ml.Close()
		return ErrServerStopped
	}
	s.serving = true
	s.listeners[ml] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ml)
		s.mu.Unlock()
		ml.Close()
	}()
	for {
		sess, err := ml.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				<-s.stopped
				return nil
			}
			return err
		}
		s.serveSession(sess, func(error) {})
	}
}

// ServeConn serves one connection the caller accepted: the server side of
// a session. It returns when the session ends.
func (s *Server) ServeConn(conn net.Conn) error {
	sess, err := mux.Server(conn, s.cfg.peer.muxConfig())
	if err != nil {
		return err
	}
	return s.ServeSession(sess)
}

// ServeSession serves calls on a session the caller made, on either side
// of it, and returns when the session has ended and its handlers have
// returned. It returns nil if the session was closed by Close or Stop on
// this side (a MaxConnectionAge's among them), or by the peer's own
// Close, ErrServerStopped if the Server had stopped already, and the
// session's error otherwise. MaxConnectionAge applies to the session;
// MaxConnectionIdle does not, the session's IdleTimeout being the one it
// was made with. The session hello is the one of the session's side: on
// the server side, the Server's Authenticator admits the session before
// its calls are served; on the client side (mux.Client), this side sends
// the hello, with no session metadata, and is served once admitted.
func (s *Server) ServeSession(sess *mux.Session) error {
	ended := make(chan error, 1)
	s.serveSession(sess, func(err error) { ended <- err })
	return <-ended
}

// serveSession is ServeSession without the wait: it returns at once, and
// calls ended with what ServeSession returns once the session has ended
// and its handlers have returned. Serve serves its sessions so, with no
// goroutine waiting for each while it lasts.
func (s *Server) serveSession(sess *mux.Session, ended func(error)) {
	cfg := s.cfg.peer
	cfg.services = s
	p := newPeer(sess, cfg)
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		p.kill()
		sess.AfterFunc(func() {
			p.waitIdle(true)
			ended(ErrServerStopped)
		})
		return
	}
	s.peers[p] = struct{}{}
	s.mu.Unlock()
	stopAge := s.watchAge(p)
	p.admitted = s.admitted
	p.startHello()
	sess.AfterFunc(func() {
		s.dir.leave(p)
		p.waitIdle(true) // the session has ended: wait for its handlers
		stopAge()
		s.mu.Lock()
		delete(s.peers, p)
		s.mu.Unlock()
		ended(sessionEndError(sess.Err()))
	})
}

// admitted lists a peer the session hello has admitted in the Directory,
// and starts OnPeer for it.
func (s *Server) admitted(p *Peer) {
	s.dir.join(p)
	if s.cfg.onPeer != nil {
		go s.cfg.onPeer(p)
	}
}

// authSlot waits for a turn to run the Authenticator, until ctx ends.
func (s *Server) authSlot(ctx context.Context) error {
	select {
	case s.authSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// authDone ends a turn authSlot gave.
func (s *Server) authDone() { <-s.authSlots }

// sessionEndError is nil for a session that ended in good order: closed by
// this side, or after the peer's GoAway without error.
func sessionEndError(err error) error {
	var g *mux.GoAwayError
	if errors.Is(err, mux.ErrSessionClosed) || errors.As(err, &g) && g.Remote && g.Code == mux.GoAwayNormal {
		return nil
	}
	return err
}

// Peers returns the peers connected now whose sessions the session hello
// has admitted. [Peer.Stats] on each is what an operator asks of them:
// address, Identity, TLS state, transport, age, streams and calls in
// flight each way, bytes and keepalive round trip; package rpc/peermetrics
// exports the same to Prometheus at scrape time.
func (s *Server) Peers() []*Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	peers := make([]*Peer, 0, len(s.peers))
	for p := range s.peers {
		if p.greeting.Load() != nil {
			peers = append(peers, p)
		}
	}
	return peers
}

// GracefulStop stops accepting connections, sends every peer a GoAway so
// that it makes no new calls, waits for the calls in flight in both
// directions to finish (the peers' calls to the server and the server's
// calls back to them, from handlers or OnPeer alike) with no time limit,
// and closes the sessions. To bound it, call Stop: GracefulStop then
// returns too.
func (s *Server) GracefulStop() {
	var wg sync.WaitGroup
	for _, p := range s.beginStop() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.shutdown(s.halt, []byte("server stopping"))
		}()
	}
	wg.Wait()
	s.endStop()
}

// Stop closes every listener and session at once, as gRPC's Stop does:
// calls in flight fail (the peers' with Unavailable, the server's own
// calls back with Canceled and ErrConnClosing), and handlers' contexts
// are cancelled. Stop does not wait for the handlers to return, and ends
// a GracefulStop in progress.
func (s *Server) Stop() {
	peers := s.beginStop()
	s.haltNow()
	for _, p := range peers {
		p.kill()
	}
	s.endStop()
}

// beginStop marks the Server stopping, so that ServeSession serves no new
// session, closes the listeners, and returns the peers connected now.
func (s *Server) beginStop() []*Peer {
	s.mu.Lock()
	s.stopping = true
	listeners := make([]*mux.Listener, 0, len(s.listeners))
	for l := range s.listeners {
		listeners = append(listeners, l)
	}
	peers := make([]*Peer, 0, len(s.peers))
	for p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	for _, l := range listeners {
		l.Close()
	}
	return peers
}

// endStop records that a stop has completed, for Serve to return.
func (s *Server) endStop() {
	s.stoppedOnce.Do(func() { close(s.stopped) })
}

var _ ServiceRegistrar = (*Server)(nil)
var _ context.Context = (*serverCall)(nil)
