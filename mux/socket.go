package mux

import (
	"net"
	"sync/atomic"
	"time"
)

// socket is how the send path writes to the connection. tryWrite writes
// what the kernel takes at once, without blocking, so that a sender can
// flush in its own goroutine and still never wait on a congested
// connection; write blocks until everything is written, calling progress
// whenever bytes leave, so that keepalive can tell a slow link from a dead
// one. progress says drained when the bytes left after the write had to
// wait for the kernel to take them: the peer is reading.
type socket interface {
	// tryWrite writes a prefix of b without blocking and returns its
	// length. ok is false when the connection cannot be written to without
	// blocking at all; then nothing was written.
	tryWrite(b []byte) (n int, ok bool, err error)
	// write writes all of b, blocking, reporting progress as bytes leave.
	write(b []byte) error
}

// newSocket returns the socket for conn: raw non-blocking writes on the
// descriptor of a TCP or Unix connection where the platform allows, plain
// writes in pieces otherwise (TLS, pipes, wrapped connections). Its
// writes call progress as bytes leave, and add what each write syscall
// (or conn.Write) took to sent.
func newSocket(conn net.Conn, progress func(drained bool), sent *atomic.Uint64) socket {
	if s := newRawSocket(conn, progress, sent); s != nil {
		return s
	}
	return plainSocket{conn, progress, sent}
}

// plainWriteChunk bounds one Write on a connection that offers no raw
// access: between two pieces, progress is reported. A piece that took
// plainBlocked or longer had to wait for the peer to drain the connection.
const (
	plainWriteChunk = 16 << 10
	plainBlocked    = time.Millisecond
)

// plainSocket writes through the connection's Write. It cannot try a write
// without blocking, so its writes are left to the writer goroutine.
type plainSocket struct {
	conn     net.Conn
	progress func(drained bool)
	sent     *atomic.Uint64 // bytes written, for Stats
}

func (p plainSocket) tryWrite([]byte) (int, bool, error) { return 0, false, nil }

func (p plainSocket) write(b []byte) error {
	for len(b) > 0 {
		start := time.Now()
		n, err := p.conn.Write(b[:min(len(b), plainWriteChunk)])
		if n > 0 {
			p.sent.Add(uint64(n))
			p.progress(time.Since(start) >= plainBlocked)
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// now is the clock of the send path's progress, in unix nanoseconds.
func now() int64 { return time.Now().UnixNano() }
