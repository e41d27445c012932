package grpcport

import (
	"errors"
	"net"
)

// errNoPeek says the connection cannot be peeked at: its bytes must be
// read, and replayed.
var errNoPeek = errors.New("grpcport: cannot peek")

// sniff finds out what conn speaks from its first bytes, at most sniffLen
// of them. It returns the connection to hand over: conn itself when it
// could peek (see peek), or a connection that replays the bytes it read
// and then reads conn. Nothing is allocated before the bytes have come.
func sniff(conn net.Conn) (protocol, net.Conn, error) {
	var b [sniffLen]byte
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		// Only the standard library's own connections: a wrapper that
		// reads ahead would keep bytes a peek cannot see.
		p, err := peek(conn, &b)
		if err != errNoPeek {
			return p, conn, err
		}
	}
	n := 0
	for {
		m, err := conn.Read(b[n:])
		n += m
		if p := classify(b[:n], n == sniffLen || err != nil); p != unknown {
			return p, &replayConn{Conn: conn, buf: b, n: n}, nil
		}
		if err != nil {
			return unknown, conn, err
		}
	}
}

// replayConn is a connection whose first bytes were read to tell its
// protocol: its reads return them first.
type replayConn struct {
	net.Conn
	buf    [sniffLen]byte
	off, n int
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.off < c.n {
		k := copy(p, c.buf[c.off:c.n])
		c.off += k
		return k, nil
	}
	return c.Conn.Read(p)
}
