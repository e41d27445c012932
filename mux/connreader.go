package mux

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// connReader is the connection as the session's reader sees it: a
// buffered reader, with bufio.Reader's Peek, Discard and Read, that holds
// no buffer while it waits for bytes, so that an idle session costs none.
// On a TCP or Unix connection, where the platform allows (see
// newRawReader), it waits for the connection to be readable with no
// buffer, through the descriptor: it takes a buffer from readBufs when
// bytes have arrived and gives it back once they are all consumed and it
// waits again. A busy session pays nothing for it: it reads on with the
// buffer it holds whenever bytes are there, and lets go of it only when a
// read finds none. Other connections (TLS, pipes, wrapped connections)
// are read through their Read, which needs a buffer to wait with: the
// reader keeps the buffer it took with the first bytes until the session
// ends.
//
// Only the goroutine reading the session uses it. Every read that brings
// bytes is a sign of life, for keepalive, and is counted, for Stats.
type connReader struct {
	conn  net.Conn
	raw   syscall.RawConn // nil: reads go through conn.Read
	heard *atomic.Int64   // when bytes last arrived, in unix nanos
	recv  *atomic.Uint64  // bytes read, for Stats

	box  *[]byte // the buffer, from readBufs; nil while the reader holds none
	r, w int     // (*box)[r:w] is unread

	// The raw read under way: its destination, the caller's slice unless
	// own (then the buffer, after its unread bytes), and its outcome.
	// readFD, made once, is the function RawConn.Read calls.
	dst    []byte
	own    bool
	n      int
	err    error
	readFD func(fd uintptr) bool
}

// readBufs holds the buffers of the readers that wait for bytes.
var readBufs = sync.Pool{New: func() any {
	b := make([]byte, readBufferSize)
	return &b
}}

func newConnReader(conn net.Conn, heard *atomic.Int64, recv *atomic.Uint64) *connReader {
	c := &connReader{conn: conn, heard: heard, recv: recv}
	newRawReader(c)
	return c
}

// Buffered returns how many bytes can be read without reading the
// connection.
func (c *connReader) Buffered() int { return c.w - c.r }

// Peek returns the next n bytes without consuming them. With fewer, it
// returns those and the error that stopped it: the connection's, or
// bufio.ErrBufferFull when n is more than a buffer holds. The bytes are
// valid until the next call.
func (c *connReader) Peek(n int) ([]byte, error) {
	for c.w-c.r < n {
		if n > readBufferSize {
			return c.unread(), bufio.ErrBufferFull
		}
		if err := c.fill(); err != nil {
			return c.unread(), err
		}
	}
	return (*c.box)[c.r : c.r+n], nil
}

// Discard skips the next n bytes, and returns how many it skipped: fewer
// only with the connection's error.
func (c *connReader) Discard(n int) (int, error) {
	done := 0
	for {
		k := min(n-done, c.w-c.r)
		c.r += k
		done += k
		if done == n {
			return done, nil
		}
		if err := c.fill(); err != nil {
			return done, err
		}
	}
}

// Read reads into p what is buffered, or, with nothing buffered, what
// one read of the connection brings: straight into p when p is at least
// as large as a buffer.
func (c *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.r == c.w {
		if len(p) >= readBufferSize {
			return c.read(p, false)
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*c.box)[c.r:c.w])
	c.r += n
	return n, nil
}

// unread returns the buffered bytes.
func (c *connReader) unread() []byte {
	if c.box == nil {
		return nil
	}
	return (*c.box)[c.r:c.w]
}

// fill reads the connection once into the buffer, after the unread bytes,
// which it first moves to the front.
func (c *connReader) fill() error {
	if c.r > 0 {
		c.w = copy(*c.box, (*c.box)[c.r:c.w])
		c.r = 0
	}
	_, err := c.read(nil, true)
	return err
}

// read reads the connection once: into p, or, with own, into the buffer
// after its unread bytes, taking a buffer if it holds none.
func (c *connReader) read(p []byte, own bool) (int, error) {
	var n int
	var err error
	if c.raw == nil {
		if own {
			c.take()
			p = (*c.box)[c.w:]
		}
		n, err = c.conn.Read(p)
	} else {
		c.dst, c.own, c.n, c.err = p, own, 0, nil
		err = c.raw.Read(c.readFD)
		if err == nil {
			err = c.err
		}
		n = c.n
		c.dst, c.err = nil, nil
	}
	if n > 0 {
		c.heard.Store(now())
		c.recv.Add(uint64(n))
		if own {
			c.w += n
		}
	}
	return n, err
}

// take gives the reader a buffer, if it holds none.
func (c *connReader) take() {
	if c.box == nil {
		c.box = readBufs.Get().(*[]byte)
	}
}

// release gives the buffer back. What it held unread is lost: the reader
// releases it with nothing unread, or once it reads no more.
func (c *connReader) release() {
	if c.box != nil {
		readBufs.Put(c.box)
	}
	c.box, c.r, c.w = nil, 0, 0
}
