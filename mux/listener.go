package mux

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"sync"
	"time"
)

// Dial connects to addr and starts the client side of a session on the
// connection. ctx bounds both the dial and the handshake.
func Dial(ctx context.Context, network, addr string, cfg *Config) (*Session, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	s, err := newSession(ctx, conn, cfg, true)
	var np *noPrefaceError
	if errors.As(err, &np) && probeTLS(ctx, network, addr) {
		err = &notMuxrpcError{what: "the peer speaks TLS: dial with rpc.WithTLS (mux.DialTLS)"}
	}
	return s, err
}

// probeTLS reports whether the server at addr speaks TLS. A TLS server
// hangs up on a muxrpc preface without a word, so when a server did so,
// Dial asks it again, with a TLS ClientHello this time, and looks at the
// first bytes of the answer: a TLS record. It takes a second at most. The
// answer is kept for a minute (see probed), so that a client that
// redials a server that hangs up does not double its connections.
func probeTLS(ctx context.Context, network, addr string) bool {
	key := network + " " + addr
	probed.mu.Lock()
	r, ok := probed.m[key]
	probed.mu.Unlock()
	if ok && time.Since(r.at) < time.Minute {
		return r.tls
	}
	isTLS := probeTLSNow(ctx, network, addr)
	probed.mu.Lock()
	if probed.m == nil || len(probed.m) >= 256 {
		probed.m = make(map[string]probeResult)
	}
	probed.m[key] = probeResult{isTLS, time.Now()}
	probed.mu.Unlock()
	return isTLS
}

// probed keeps probeTLS's recent answers, by network and address.
var probed struct {
	mu sync.Mutex
	m  map[string]probeResult
}

type probeResult struct {
	tls bool
	at  time.Time
}

func probeTLSNow(ctx context.Context, network, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	host, _, _ := net.SplitHostPort(addr)
	if host == "" {
		host = "localhost"
	}
	fc := &firstRead{Conn: conn}
	// Only the answer's first bytes are read: the handshake fails there,
	// before any certificate is looked at.
	tls.Client(fc, &tls.Config{ServerName: host}).HandshakeContext(ctx)
	return looksLikeTLS(fc.got)
}

// firstRead is a connection that reads once: it keeps the bytes, and
// fails every later read.
type firstRead struct {
	net.Conn
	got []byte
}

var errProbed = errors.New("mux: probed")

func (c *firstRead) Read(p []byte) (int, error) {
	if c.got != nil {
		return 0, errProbed
	}
	n, err := c.Conn.Read(p)
	c.got = append([]byte{}, p[:n]...)
	return n, err
}

// DialTLS connects to addr over TLS and starts the client side of a
// session on the connection. ctx bounds the dial and both handshakes;
// Config.HandshakeTimeout bounds the TLS handshake and the session's
// together, as it does on the server's side. As with tls.Dial, an empty
// tlsConfig.ServerName means the host in addr. tlsConfig must not offer
// "h2" by ALPN: a server that shares its port with gRPC takes a client
// that negotiates it for gRPC (PROTOCOL.md, section 20).
func DialTLS(ctx context.Context, network, addr string, tlsConfig *tls.Config, cfg *Config) (*Session, error) {
	if tlsConfig != nil && slices.Contains(tlsConfig.NextProtos, "h2") {
		return nil, errOffersH2
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tlsConfig == nil {
		tlsConfig = &tls.Config{}
	}
	if tlsConfig.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			conn.Close()
			return nil, err
		}
		tlsConfig = tlsConfig.Clone()
		tlsConfig.ServerName = host
	}
	// The session's handshake runs the TLS handshake, under its deadline.
	return newSession(ctx, tls.Client(conn, tlsConfig), cfg, true)
}

// A Listener accepts connections and starts the server side of a session on
// each. Handshakes run concurrently, so one slow or bad peer never delays
// the others; a failed handshake closes its connection and is not reported.
//
// What a connection costs the Listener is bounded, so that peers that never
// finish their handshake, or an application that does not call Accept,
// cannot exhaust the process:
//
//   - Until its handshake is done, a connection costs a goroutine and the
//     connection itself; its read buffer is allocated only once its first
//     bytes have arrived. At most Config.MaxPendingHandshakes (1024 by
//     default) connections are in their handshake at once. When another
//     arrives, the Listener sheds the oldest of them: it closes that
//     connection, whose handshake then fails. It never stops accepting
//     because of handshakes, so silent or slow connections delay no other
//     client; each lasts at most HandshakeTimeout, or until
//     MaxPendingHandshakes newer connections have arrived.
//   - A session whose handshake succeeded waits for Accept in a queue of
//     32. While that queue is full the Listener accepts no connections
//     (they wait in the kernel's backlog); handshakes already under way go
//     on, and their sessions wait for room in the queue. Once Accept takes
//     a session, the Listener accepts again. Sessions that wait thus hold
//     no handshake slot: they never keep other clients' handshakes from
//     running, and only an application that stops calling Accept stops
//     the Listener.
type Listener struct {
	ln         net.Listener
	cfg        *Config
	maxPending int             // Config.MaxPendingHandshakes
	ready      chan *Session   // established sessions waiting for Accept
	room       chan struct{}   // a token when Accept made room in ready
	ctx        context.Context // cancelled by Close, ending handshakes
	cancel     context.CancelFunc
	done       chan struct{}
	once       sync.Once
	wg         sync.WaitGroup // the accept loop
	shakes     sync.WaitGroup // the handshakes, waited for by the accept loop

	mu      sync.Mutex
	err     error     // why the accept loop stopped
	pending list.List // of *pendingConn in their handshake, oldest first
}

// Bounds of a Listener; see its doc.
const (
	// maxHandshakes is the default of Config.MaxPendingHandshakes.
	maxHandshakes = 1024
	// maxReady bounds the established sessions waiting for Accept.
	maxReady = 32
)

// A pendingConn is a connection in its handshake.
type pendingConn struct {
	conn net.Conn
	elem *list.Element // in Listener.pending, while there
	shed bool          // closed to make room; guarded by the Listener's mu
}

// Listen listens on addr and returns a Listener of sessions.
func Listen(network, addr string, cfg *Config) (*Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return NewListener(ln, cfg)
}

// ListenTLS listens on addr for TLS connections and returns a Listener of
// sessions.
func ListenTLS(network, addr string, tlsConfig *tls.Config, cfg *Config) (*Listener, error) {
	ln, err := tls.Listen(network, addr, tlsConfig)
	if err != nil {
		return nil, err
	}
	return NewListener(ln, cfg)
}

// NewListener returns a Listener of sessions on the connections ln accepts.
// It checks cfg at once; the Listener owns ln.
func NewListener(ln net.Listener, cfg *Config) (*Listener, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		ln.Close()
		return nil, err
	}
	l := &Listener{
		ln:         ln,
		cfg:        cfg,
		maxPending: c.MaxPendingHandshakes,
		ready:      make(chan *Session, maxReady),
		room:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// acceptLoop accepts connections and starts a handshake on each, until the
// Listener closes or its net.Listener fails. Before it returns, it waits
// for the handshakes and closes the sessions no Accept took.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	defer l.closeQueue()
	for {
		if !l.waitForRoom() {
			return
		}
		conn, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			select {
			case <-l.done: // Close closed ln
			default:
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
			}
			return
		}
		p := l.track(conn)
		l.shakes.Add(1)
		go l.handshake(p)
	}
}

// waitForRoom waits while the queue of sessions for Accept is full. It
// reports false when the Listener closed meanwhile.
func (l *Listener) waitForRoom() bool {
	for len(l.ready) == cap(l.ready) {
		select {
		case <-l.room:
		case <-l.done:
			return false
		}
	}
	return true
}

// track records a connection that starts its handshake, shedding the
// oldest one in its handshake if there are too many.
func (l *Listener) track(conn net.Conn) *pendingConn {
	p := &pendingConn{conn: conn}
	var shed *pendingConn
	l.mu.Lock()
	if l.pending.Len() >= l.maxPending {
		shed = l.pending.Remove(l.pending.Front()).(*pendingConn)
		shed.shed = true
	}
	p.elem = l.pending.PushBack(p)
	l.mu.Unlock()
	if shed != nil {
		closeNow(shed.conn) // its handshake fails and ends
	}
	return p
}

// closeNow closes conn without waiting for anything: not for a TLS
// connection's closing alert, whose sending may wait on a peer that does
// not read.
func closeNow(conn net.Conn) {
	if w, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = w.NetConn()
	}
	conn.Close()
}

// handshake runs the server side of p's handshake and queues its session
// for Accept.
func (l *Listener) handshake(p *pendingConn) {
	defer l.shakes.Done()
	s, err := newSession(l.ctx, p.conn, l.cfg, false)
	l.mu.Lock()
	l.pending.Remove(p.elem)
	shed := p.shed
	l.mu.Unlock()
	if err != nil {
		return
	}
	if shed { // closed as the oldest just as its handshake succeeded
		s.Kill()
		return
	}
	select {
	case l.ready <- s:
	case <-l.done:
		s.Kill()
	}
}

// closeQueue shuts the Listener down, waits for its handshakes to end and
// closes the sessions still waiting for Accept.
func (l *Listener) closeQueue() {
	l.shutdown()
	l.shakes.Wait()
	for {
		select {
		case s := <-l.ready:
			s.Kill()
		default:
			return
		}
	}
}

// Accept waits for the next session whose handshake succeeded.
func (l *Listener) Accept() (*Session, error) {
	select {
	case <-l.done:
		return nil, l.closedErr()
	default:
	}
	select {
	case s := <-l.ready:
		signal(l.room)
		return s, nil
	case <-l.done:
		return nil, l.closedErr()
	}
}

// closedErr is Accept's error once the Listener is done.
func (l *Listener) closedErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	return net.ErrClosed
}

// Close stops listening. Sessions already accepted are not affected; those
// still in their handshake, or waiting for Accept, are closed. It waits for
// the Listener's goroutines to exit.
func (l *Listener) Close() error {
	err := l.shutdown()
	l.wg.Wait()
	return err
}

func (l *Listener) shutdown() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		l.cancel()
		err = l.ln.Close()
	})
	return err
}

// Addr returns the address the Listener listens on.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }
