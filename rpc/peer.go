package rpc

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
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

	mu      sync.Mutex
	idle    sync.Cond // signalled when active drops to 0
	active  int       // handlers running
	retired bool      // the session ended and its handlers were awaited: start no more
}

type peerKey struct{}

// PeerFromContext returns the Peer a handler's call arrived on, or nil
// outside a handler. Calls made through it go back to the caller.
func PeerFromContext(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}

// Dial connects to target ("host:port", or "unix:/path") and returns the
// client side of a new session. ctx bounds the dial and the handshake.
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
		return nil, fmt.Errorf("rpc: dial %s: %w", target, err)
	}
	return newPeer(sess, cfg), nil
}

// NewPeer returns a Peer on a session the caller made, with mux.Client or
// mux.Server on a connection it already has; either side works. The Peer
// owns the session from then on.
func NewPeer(sess *mux.Session, opts ...DialOption) *Peer {
	cfg := newPeerConfig()
	for _, o := range opts {
		o.applyToPeer(&cfg)
	}
	return newPeer(sess, cfg)
}

func newPeer(sess *mux.Session, cfg peerConfig) *Peer {
	p := &Peer{
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
	p.ctx, p.cancel = context.WithCancel(base)
	if p.srv != nil {
		p.srv.startServing()
	}
	go func() {
		<-sess.Done()
		p.cancel() // handlers' contexts end with the session
	}()
	sess.HandleType(StreamType, p.handle)
	return p
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

// Close ends the session gracefully: the other side may make no new calls,
// calls in flight in both directions finish (up to mux.Config.CloseTimeout),
// then the connection closes. Close waits for this side's handlers to
// return.
func (p *Peer) Close() error {
	err := p.sess.Close()
	p.wait()
	return err
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
