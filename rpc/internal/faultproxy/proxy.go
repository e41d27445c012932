package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Direction names an end of the link: the peer that receives the bytes
// forwarded that way, or the cut.
type Direction uint8

const (
	// ToTarget is the target's end: bytes the client sends, and the
	// proxy's connection to the target.
	ToTarget Direction = 1 << iota
	// ToClient is the client's end: bytes the target sends, and the
	// connection the client made to the proxy.
	ToClient
	// Both is both ends.
	Both = ToTarget | ToClient
)

// String returns "to target", "to client" or "both ways".
func (d Direction) String() string {
	switch d {
	case ToTarget:
		return "to target"
	case ToClient:
		return "to client"
	case Both:
		return "both ways"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// The ends of a pair, as indexes: a pair's sockets, and the forwarding
// toward each.
const (
	clientEnd = 0
	targetEnd = 1
)

// ends returns the ends d names.
func (d Direction) ends() []int {
	var e []int
	if d&ToClient != 0 {
		e = append(e, clientEnd)
	}
	if d&ToTarget != 0 {
		e = append(e, targetEnd)
	}
	return e
}

// CutMode is how Cut ends a connection.
type CutMode uint8

const (
	// RST aborts the connection: SO_LINGER 0 and a close make the kernel
	// send a reset, and data not yet delivered is lost.
	RST CutMode = iota + 1
	// FIN closes the connection gracefully: the proxy half-closes it, so
	// the peer reads an end of file, and then reads and drops whatever the
	// peer still sends until the peer closes too.
	FIN
)

// String returns "RST" or "FIN".
func (m CutMode) String() string {
	switch m {
	case RST:
		return "RST"
	case FIN:
		return "FIN"
	}
	return fmt.Sprintf("CutMode(%d)", uint8(m))
}

// Stats counts what a proxy forwarded toward one end, over all its
// connections.
type Stats struct {
	Bytes  int64 // bytes written toward the end
	Writes int64 // writes that carried them: pieces, when split
}

// A Proxy forwards connections from a loopback port to a target, and
// injects faults into them. Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	mu     sync.Mutex
	change sync.Cond // broadcast when a fault changes, or the proxy closes
	pairs  map[*pair]struct{}
	way    [2]wayConfig // the forwarding toward each end
	stats  [2]Stats
	closed bool
}

// wayConfig is how the proxy forwards toward one end.
type wayConfig struct {
	silent bool
	bucket *bucket         // nil: as fast as it can
	split  func() Splitter // nil: as read; makes each connection's own
	gap    time.Duration   // pause after each split piece
}

// New starts a proxy on 127.0.0.1, on a port of the system's choosing,
// that forwards to target ("host:port"). Close stops it.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, done: make(chan struct{}), pairs: map[*pair]struct{}{}}
	p.change.L = &p.mu
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the address clients dial: the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Conns returns the number of connections the proxy holds: pairs of which
// a socket is still open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// Stats returns what the proxy has forwarded toward the end d names; for
// Both, the sums.
func (p *Proxy) Stats(d Direction) Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s Stats
	for _, e := range d.ends() {
		s.Bytes += p.stats[e].Bytes
		s.Writes += p.stats[e].Writes
	}
	return s
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	pairs := p.pairs
	p.pairs = map[*pair]struct{}{}
	p.change.Broadcast()
	p.mu.Unlock()
	err := p.ln.Close()
	for pr := range pairs {
		pr.conns[clientEnd].Close()
		pr.conns[targetEnd].Close()
	}
	p.wg.Wait()
	return err
}

// Cut ends every connection the proxy holds now at the ends d names, by
// mode; connections made later are not affected. An end that is not cut
// stays open but gets nothing more, and what its peer sends is no longer
// read: to that peer the link has gone silent, as through a middlebox that
// dropped the connection without telling it.
func (p *Proxy) Cut(mode CutMode, d Direction) {
	if mode != RST && mode != FIN {
		panic(fmt.Sprintf("faultproxy: Cut with %v", mode))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		for _, e := range d.ends() {
			pr.cutLocked(mode, e)
		}
	}
	p.change.Broadcast()
}

// Silence stops (on) or resumes (!on) forwarding toward the ends d names,
// on every connection, now and later. Sockets stay open; what arrives
// meanwhile waits in the proxy and the kernel's buffers, and is forwarded
// when the link speaks again.
func (p *Proxy) Silence(d Direction, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range d.ends() {
		p.way[e].silent = on
	}
	p.change.Broadcast()
}

// Throttle limits forwarding toward each end d names to bytesPerSecond,
// on all connections together, now and later; 0 lifts the limit. The
// limit is a token bucket that holds 50 ms worth of bytes (at least one),
// so a burst after an idle spell is at most that long, and the proxy reads
// no more than that at a time, leaving the rest in the kernel's buffers
// to hold back the sender.
func (p *Proxy) Throttle(d Direction, bytesPerSecond int) {
	if bytesPerSecond < 0 {
		panic("faultproxy: negative rate")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range d.ends() {
		p.way[e].bucket = nil
		if bytesPerSecond > 0 {
			p.way[e].bucket = newBucket(bytesPerSecond, max(bytesPerSecond/20, 1))
		}
	}
	p.change.Broadcast()
}

// Split makes the proxy deliver the bytes toward the ends d names in
// pieces, each in its own write, with a pause of gap after each (0: none),
// on connections made from now on: each direction of each connection gets
// its own Splitter from newSplitter, so that one that follows a protocol
// starts at its first byte. A nil newSplitter forwards bytes as they are
// read. The pause makes it likely, never certain, that the receiver reads
// each piece apart: TCP may merge what arrives between two reads.
func (p *Proxy) Split(d Direction, newSplitter func() Splitter, gap time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range d.ends() {
		p.way[e].split, p.way[e].gap = newSplitter, gap
	}
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.DialTimeout("tcp", p.target, 10*time.Second)
		if err != nil {
			setLinger0(c)
			c.Close()
			continue
		}
		pr := &pair{p: p, conns: [2]*net.TCPConn{c.(*net.TCPConn), t.(*net.TCPConn)}, running: 2, reading: [2]bool{true, true}}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			t.Close()
			return
		}
		p.pairs[pr] = struct{}{}
		splits := [2]Splitter{}
		for e := range splits {
			if f := p.way[e].split; f != nil {
				splits[e] = f()
			}
		}
		p.mu.Unlock()
		p.wg.Add(2)
		go pr.pump(clientEnd, splits[clientEnd])
		go pr.pump(targetEnd, splits[targetEnd])
	}
}

func setLinger0(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// isClosed reports whether err is a read or write on a socket this proxy
// closed.
func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
