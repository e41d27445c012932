package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
)

// Dial connects to addr and starts the client side of a session on the
// connection. ctx bounds both the dial and the handshake.
func Dial(ctx context.Context, network, addr string, cfg *Config) (*Session, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return newSession(ctx, conn, cfg, true)
}

// DialTLS connects to addr over TLS and starts the client side of a
// session on the connection. ctx bounds the dial and both handshakes.
func DialTLS(ctx context.Context, network, addr string, tlsConfig *tls.Config, cfg *Config) (*Session, error) {
	d := tls.Dialer{Config: tlsConfig}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return newSession(ctx, conn, cfg, true)
}

// A Listener accepts connections and starts the server side of a session on
// each. Handshakes run concurrently, so one slow or bad peer never delays
// the others; a failed handshake closes its connection and is not reported.
type Listener struct {
	ln       net.Listener
	cfg      *Config
	ready    chan *Session
	ctx      context.Context // cancelled by Close, ending handshakes
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error // why the accept loop stopped
	shakeSem chan struct{}
}

// maxHandshakes bounds the handshakes a Listener runs at once; more
// connections wait in the kernel's backlog.
const maxHandshakes = 1024

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
	if _, err := cfg.withDefaults(); err != nil {
		ln.Close()
		return nil, err
	}
	l := &Listener{
		ln:       ln,
		cfg:      cfg,
		ready:    make(chan *Session),
		done:     make(chan struct{}),
		shakeSem: make(chan struct{}, maxHandshakes),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		select {
		case l.shakeSem <- struct{}{}:
		case <-l.done:
			return
		}
		conn, err := l.ln.Accept()
		if err != nil {
			<-l.shakeSem
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.shutdown()
			return
		}
		l.wg.Add(1)
		go l.handshake(conn)
	}
}

func (l *Listener) handshake(conn net.Conn) {
	defer l.wg.Done()
	s, err := newSession(l.ctx, conn, l.cfg, false)
	<-l.shakeSem
	if err != nil {
		return
	}
	select {
	case l.ready <- s:
	case <-l.done:
		s.Kill()
	}
}

// Accept waits for the next session whose handshake succeeded.
func (l *Listener) Accept() (*Session, error) {
	select {
	case s := <-l.ready:
		return s, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops listening. Sessions already accepted are not affected; those
// still in their handshake are closed. It waits for the Listener's
// goroutines to exit.
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
