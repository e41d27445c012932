package grpcport

import (
	"net"
	"sync"
)

// connQueue is a net.Listener whose connections are those the port routed
// to one protocol, for that protocol's server to Serve.
type connQueue struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver hands conn to the server, or closes it if the queue is closed.
func (q *connQueue) deliver(conn net.Conn) {
	select {
	case q.conns <- conn:
	case <-q.done:
		conn.Close()
	}
}

// Accept returns the next connection routed to the queue's protocol.
func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close stops the queue: Accept and deliver return at once.
func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

// Addr returns the address of the port's first listener.
func (q *connQueue) Addr() net.Addr { return q.addr }
