//go:build unix

package mux

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// rawSocket writes to a connection's descriptor directly: the runtime has
// made it non-blocking, so a write takes what the kernel buffer has room
// for and says EAGAIN when it is full, and RawConn.Write waits for room
// through the runtime's poller. One write runs at a time (the send path's
// flusher), so the write in progress lives in the struct, and the
// functions RawConn.Write calls are made once: a write allocates nothing.
type rawSocket struct {
	rc       syscall.RawConn
	progress func(drained bool)
	sent     *atomic.Uint64 // bytes written, for Stats

	// The write in progress.
	buf    []byte
	n      int
	err    error
	waited bool

	tryOnce, writeAll func(fd uintptr) bool
}

// newRawSocket returns a rawSocket for a TCP or Unix connection, or nil.
// Only these concrete types qualify: a type that wraps one (embedding it,
// say) may do something in its Write that a raw write would skip.
func newRawSocket(conn net.Conn, progress func(drained bool), sent *atomic.Uint64) socket {
	var sc syscall.Conn
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawSocket{rc: rc, progress: progress, sent: sent}
	r.tryOnce, r.writeAll = r.tryOnceFD, r.writeAllFD
	return r
}

func (r *rawSocket) tryWrite(b []byte) (int, bool, error) {
	r.buf, r.n, r.err = b, 0, nil
	err := r.rc.Write(r.tryOnce)
	n := r.n
	if err == nil {
		err = r.err
	}
	r.buf, r.err = nil, nil
	return n, true, wrapWriteErr(err)
}

// tryOnceFD writes what the kernel takes of r.buf now, never waiting.
func (r *rawSocket) tryOnceFD(fd uintptr) bool {
	for {
		m, err := syscall.Write(int(fd), r.buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // full: the rest is the writer goroutine's
		case err != nil:
			r.err = err
			return true
		}
		r.n = m
		r.sent.Add(uint64(m))
		return true
	}
}

func (r *rawSocket) write(b []byte) error {
	r.buf, r.err, r.waited = b, nil, false
	err := r.rc.Write(r.writeAll)
	if err == nil {
		err = r.err
	}
	r.buf, r.err = nil, nil
	return wrapWriteErr(err)
}

// writeAllFD writes r.buf, asking to wait whenever the kernel is full.
func (r *rawSocket) writeAllFD(fd uintptr) bool {
	for len(r.buf) > 0 {
		n, err := syscall.Write(int(fd), r.buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			r.waited = true
			return false // wait until the kernel takes more
		case err != nil:
			r.err = err
			return true
		}
		r.buf = r.buf[n:]
		r.sent.Add(uint64(n))
		r.progress(r.waited)
	}
	return true
}

// wrapWriteErr gives a raw write's error the shape net.Conn's Write would.
func wrapWriteErr(err error) error {
	if errno, ok := err.(syscall.Errno); ok {
		return &net.OpError{Op: "write", Net: "raw", Err: errno}
	}
	return err
}

// newRawReader has c read a TCP or Unix connection through its
// descriptor, so that it can wait for bytes holding no buffer; other
// connections it leaves to their Read. The types qualify as for
// newRawSocket.
func newRawReader(c *connReader) {
	var sc syscall.Conn
	switch conn := c.conn.(type) {
	case *net.TCPConn:
		sc = conn
	case *net.UnixConn:
		sc = conn
	default:
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.raw = rc
	c.readFD = c.readOnceFD
}

// readOnceFD reads once into c.dst, or, with c.own, into c's buffer after
// its unread bytes. When no bytes are there it asks RawConn.Read to wait
// for them, and lets go of a buffer that holds nothing unread meanwhile;
// it takes one again once bytes have come. The read itself tells whether
// bytes are there: RawConn.Read forgets a readiness the poller reported
// before it began, so the function it calls must look for itself.
func (c *connReader) readOnceFD(fd uintptr) bool {
	for {
		p := c.dst
		if c.own {
			c.take()
			p = (*c.box)[c.w:]
		}
		n, err := syscall.Read(int(fd), p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			if c.own && c.r == c.w {
				c.release() // wait holding no buffer
			}
			return false
		case err != nil:
			c.err = &net.OpError{Op: "read", Net: "raw", Err: err}
		case n == 0:
			c.err = io.EOF
		default:
			c.n = n
		}
		return true
	}
}
