package mux

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
)

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
