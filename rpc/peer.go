package rpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// A Peer is one side of a session. It calls the other side (Invoke,
// NewStream, and generated clients built on it) and, when it has services,
// serves the other side's calls. The same code serves whether the Peer
// dialed or was accepted: a client that dials with WithServices exposes
// callbacks, and the server calls them through the Peer it finds in its
// handler's context with PeerFromContext.
type Peer struct {
	sess      *mux.Session
	cfg       peerConfig
	srv       *Server // the services this peer serves; nil serves none
	unaryInt  UnaryClientInterceptor
	streamInt StreamClientInterceptor
	info      peer.Peer
	ctx       context.Context // the base of handler contexts; ends with the session
	cancel    context.CancelFunc

	greeting atomic.Pointer[greeting] // set once the session hello has admitted the session
	greeted  chan struct{}            // the dialing side's: closed once the hello is over
	helloErr error                    // the dialing side's: why the hello failed, set before greeted closes; calls fail with it
	admitted func(*Peer)              // a Server's: runs once the hello has admitted the session

	closing  atomic.Bool  // this side is ending the session: calls fail with ErrConnClosing
	outgoing atomic.Int64 // calls this side has in flight
	draining atomic.Bool  // a drain waits: the last outgoing call to end wakes it

	mu      sync.Mutex
	idle    sync.Cond // signalled when a drain may be over; see drain
	active  int       // handlers running
	retired bool      // the session ended and its handlers were awaited: start no more
}

type peerKey struct{}

// PeerFromContext returns the Peer a handler's call arrived on. Calls
// made through it go back to the caller. It returns nil outside a
// handler, and in the handler of a call that came by gRPC (through
// rpc/grpcport, say), which has no Peer to call back; calls on a nil
// *Peer fail with FailedPrecondition.
func PeerFromContext(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}

// Dial connects to target ("host:port", or "unix:/path") and returns the
// client side of a new session, once the server has admitted it. ctx
// bounds the dial and the handshakes; so does mux.Config's
// HandshakeTimeout. A server that refuses the session (see
// Authenticator) makes Dial fail with the refusal's status, code
// Unauthenticated or PermissionDenied, say; a session hello that ctx or
// the handshake timeout cut short, with DeadlineExceeded or Canceled. A
// failure before (no connection, a failed session handshake, a peer that
// is no muxrpc server of this transport, or ctx or the handshake timeout
// ending first) has code Unavailable, as the calls of a Client that
// cannot connect, and keeps its cause for errors.Is and errors.As:
// mux.ErrNotMuxrpc, context.DeadlineExceeded, a *net.OpError.
func Dial(ctx context.Context, target string, opts ...DialOption) (*Peer, error) {
	cfg := newPeerConfig()
	for _, o := range opts {
		o.applyToPeer(&cfg)
	}
	network, addr := "tcp", target
	if path, ok := strings.CutPrefix(target, "unix:"); ok {
		network, addr = "unix", path
	}
	var sess *mux.Session
	var err error
	if cfg.tls != nil {
		sess, err = mux.DialTLS(ctx, network, addr, cfg.tls, cfg.muxConfig())
	} else {
		sess, err = mux.Dial(ctx, network, addr, cfg.muxConfig())
	}
	if err != nil {
		return nil, dialError(target, err)
	}
	p := newPeer(sess, cfg)
	if err := p.greet(ctx); err != nil {
		p.wait()
		return nil, fmt.Errorf("rpc: dial %s: %w", target, err)
	}
	return p, nil
}

// dialError is Dial's error when it could not connect, or the handshake
// failed: Unavailable, with err as its cause.
func dialError(target string, err error) error {
	msg := fmt.Sprintf("rpc: dial %s: %v", target, err)
	return &statusError{status.New(codes.Unavailable, msg), err}
}

// NewPeer returns a Peer on a session the caller made, with mux.Client or
// mux.Server on a connection it already has; either side works. The Peer
// owns the session from then on. On the client side of the session it
// sends the session hello and does not wait for the welcome: calls made
// meanwhile wait for it on the other side, and fail with the refusal if
// the other side refuses the session. On the server side it answers the
// hello, with the Authenticator of the Server given to WithServices if
// it has one, and serves calls once the session is admitted; use
// Server.ServeSession to have a Server's OnPeer and Directory see it.
func NewPeer(sess *mux.Session, opts ...DialOption) *Peer {
	cfg := newPeerConfig()
	for _, o := range opts {
		o.applyToPeer(&cfg)
	}
	p := newPeer(sess, cfg)
	p.startHello()
	return p
}

func newPeer(sess *mux.Session, cfg peerConfig) *Peer {
	p := &Peer{
		greeted:   make(chan struct{}),
		sess:      sess,
		cfg:       cfg,
		srv:       cfg.services,
		unaryInt:  chainUnaryClient(cfg.unaryClient),
		streamInt: chainStreamClient(cfg.streamClient),
	}
	p.idle.L = &p.mu
	p.info = peer.Peer{Addr: sess.RemoteAddr(), LocalAddr: sess.LocalAddr()}
	if tc, ok := sess.Conn().(*tls.Conn); ok {
		p.info.AuthInfo = credentials.TLSInfo{
			State:          tc.ConnectionState(),
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		}
	}
	base := context.WithValue(peer.NewContext(context.Background(), &p.info), peerKey{}, p)
	if len(cfg.stats.conns) != 0 {
		base = p.statsConn(base, cfg.stats.conns)
	}
	base = metadata.NewIncomingContext(base, noMetadata) // what calls without metadata see
	p.ctx, p.cancel = context.WithCancel(base)
	if p.srv != nil {
		p.srv.startServing()
	}
	sess.AfterFunc(func() {
		p.cancel() // handlers' contexts end with the session
		p.wake()   // a drain no longer waits for outgoing calls
		p.logSessionEnd()
	})
	return p
}

// admit serves the other side's calls, now that the session hello has
// admitted the session, and tells the Server.
func (p *Peer) admit() {
	p.sess.HandleType(StreamType, p.handle)
	if p.admitted != nil {
		p.admitted(p)
	}
}

// begin counts a handler in, unless the Peer has retired.
func (p *Peer) begin() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return false
	}
	p.active++
	return true
}

// end counts a handler out.
func (p *Peer) end() {
	p.mu.Lock()
	p.active--
	if p.active == 0 {
		p.idle.Broadcast()
	}
	p.mu.Unlock()
}

// callStarts counts an outgoing call in: Invoke until it returns, a stream
// until it ends. It costs the unary path two atomic operations and no
// allocation, where a mutex would have every caller of a busy Peer queue.
func (p *Peer) callStarts() { p.outgoing.Add(1) }

// callEnds counts an outgoing call out, and wakes a drain that waits for
// the last one. A drain sets draining before it looks at the count, so
// either it sees this call's decrement or this call sees draining set.
func (p *Peer) callEnds() {
	if p.outgoing.Add(-1) == 0 && p.draining.Load() {
		p.wake()
	}
}

// wake wakes whoever waits on idle to look again.
func (p *Peer) wake() {
	p.mu.Lock()
	p.idle.Broadcast()
	p.mu.Unlock()
}

// waitIdle waits until no handler runs; with retire, it also stops new
// ones from starting, for a session that has ended.
func (p *Peer) waitIdle(retire bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retired = p.retired || retire
	for p.active > 0 {
		p.idle.Wait()
	}
}

// wait waits for the session to end and then for its handlers to return.
func (p *Peer) wait() {
	<-p.sess.Done()
	p.waitIdle(true)
}

// drain waits until no call is in flight in either direction, or until
// ctx ends, and then returns ctx's error: also when the session ended
// because ctx did. Once the session has ended it waits for this side's
// handlers only: the calls this side made have failed, or will when next
// read.
func (p *Peer) drain(ctx context.Context) error {
	p.draining.Store(true)
	stop := context.AfterFunc(ctx, p.wake)
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p.active == 0 && (p.outgoing.Load() == 0 || p.sess.Err() != nil) {
			return nil
		}
		p.idle.Wait()
	}
}

// Close ends the session at once, as gRPC's ClientConn.Close does: this
// side's calls in flight, and its calls from then on, fail with Canceled
// and ErrConnClosing; the other side's fail as its connection ends; the
// handlers serving them are cancelled, and Close waits for them to return.
// Close does not wait for the other side. Shutdown ends the session
// gracefully instead.
func (p *Peer) Close() error {
	p.closeNow()
	p.wait()
	return nil
}

// Shutdown ends the session gracefully: it sends a GoAway, so that the
// other side makes no new calls (except on the Smux transport, which has
// no GoAway), waits for the calls in flight in both directions to finish,
// however long they take, and then closes the session; this side may go
// on calling meanwhile. If ctx ends first, Shutdown closes the session at
// once as Close does, without waiting further for handlers (they are
// cancelled), and returns ctx's error.
func (p *Peer) Shutdown(ctx context.Context) error { return p.shutdownWithin(ctx, nil) }

// shutdownWithin is Shutdown, with debug data for the GoAway: a
// MaxConnectionAge's, bounded by its grace.
func (p *Peer) shutdownWithin(ctx context.Context, debug []byte) error {
	killed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(killed)
		p.closeNow()
	})
	err := p.shutdown(ctx, debug)
	switch {
	case !stop():
		<-killed
	case err != nil:
		// ctx ended, but the AfterFunc was stopped before it started: a
		// context reports its error a moment before it runs its AfterFuncs.
		p.closeNow()
	}
	return err
}

// shutdown is Shutdown and GracefulStop for one Peer: a GoAway with debug
// data, a drain, then the session's Close, which also flushes what the
// last calls wrote. If ctx ends first it returns ctx's error at once, and
// whoever ended ctx ends the session, which also ends a GoAway or Close
// blocked on a peer that does not read.
func (p *Peer) shutdown(ctx context.Context, debug []byte) error {
	p.sess.GoAway(mux.GoAwayNormal, debug) // ErrUnsupported on smux; an ended session needs none
	if err := p.drain(ctx); err != nil {
		return err
	}
	p.closing.Store(true)
	p.sess.Close()
	p.mu.Lock()
	p.retired = true // the session has ended: no handler starts now
	p.mu.Unlock()
	// A call the GoAway let in may have reached its handler only now; the
	// session's end has cancelled it.
	return p.drain(ctx)
}

// closeNow marks the Peer closing and ends its session at once, after a
// GoAway that lets the other side tell this Close from a lost connection.
// It waits at most goAwayWait for the GoAway, and the answers queued
// before it, to be written: a peer that does not read cannot hold Close
// longer.
func (p *Peer) closeNow() {
	p.closing.Store(true)
	p.sess.GoAway(mux.GoAwayNormal, nil)
	ctx, cancel := context.WithTimeout(context.Background(), goAwayWait)
	p.sess.Flush(ctx)
	cancel()
	p.sess.Kill()
}

// goAwayWait bounds how long Close waits for what it queued to leave.
const goAwayWait = 500 * time.Millisecond

// kill marks the Peer closing and ends its session at once, without a
// GoAway: Server.Stop.
func (p *Peer) kill() {
	p.closing.Store(true)
	p.sess.Kill()
}

// goingAway reports whether this side can open no more streams on the
// session: the other side sent a GoAway, this side is closing it, or it
// has ended.
func (p *Peer) goingAway() bool {
	select {
	case <-p.sess.Draining():
		return true
	default:
		return false
	}
}

// Done is closed when the session has ended.
func (p *Peer) Done() <-chan struct{} { return p.sess.Done() }

// Err says why the session ended, or nil while it runs. See mux.Session.Err.
func (p *Peer) Err() error { return p.sess.Err() }

// Session returns the session under the Peer; its other stream types carry
// other protocols beside the calls.
func (p *Peer) Session() *mux.Session { return p.sess }

// RemoteAddr returns the other side's address.
func (p *Peer) RemoteAddr() net.Addr { return p.sess.RemoteAddr() }
