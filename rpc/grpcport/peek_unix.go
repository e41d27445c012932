//go:build unix

package grpcport

import (
	"io"
	"net"
	"syscall"
)

// peek classifies conn's first bytes without taking them off the socket
// (recv with MSG_PEEK), waiting for more while they do not decide, within
// conn's read deadline. The connection then goes to its protocol's server
// as it came, its bytes unread.
func peek(conn net.Conn, b *[sniffLen]byte) (protocol, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return unknown, errNoPeek
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return unknown, errNoPeek
	}
	var p protocol
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
			return false // wait until the socket is readable
		case err != nil:
			perr = err
			return true
		case n == 0:
			perr = io.EOF
			return true
		}
		p = classify(b[:n], n == sniffLen)
		return p != unknown // else wait for more bytes
	})
	if err == nil {
		err = perr
	}
	return p, err
}
