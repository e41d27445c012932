//go:build unix

package mux

import (
	"errors"
	"net"
	"syscall"
)

// rawSocket writes to a connection's descriptor directly: the runtime has
// made it non-blocking, so a write takes what the kernel buffer has room
// for and says EAGAIN when it is full, and RawConn.Write waits for room
// through the runtime's poller.
type rawSocket struct{ rc syscall.RawConn }

// newRawSocket returns a rawSocket for a TCP or Unix connection, or nil.
// Only these concrete types qualify: a type that wraps one (embedding it,
// say) may do something in its Write that a raw write would skip.
func newRawSocket(conn net.Conn) socket {
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
	return rawSocket{rc}
}

func (r rawSocket) tryWrite(b []byte) (int, bool, error) {
	var n int
	var werr error
	err := r.rc.Write(func(fd uintptr) bool {
		for {
			m, err := syscall.Write(int(fd), b)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return true // full: the rest is the writer goroutine's
			case err != nil:
				werr = err
				return true
			}
			n = m
			return true
		}
	})
	if err == nil {
		err = werr
	}
	return n, true, wrapWriteErr(err)
}

func (r rawSocket) write(b []byte, progress func(drained bool)) error {
	var werr error
	waited := false
	err := r.rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := syscall.Write(int(fd), b)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				waited = true
				return false // wait until the kernel takes more
			case err != nil:
				werr = err
				return true
			}
			b = b[n:]
			progress(waited)
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return wrapWriteErr(err)
}

// wrapWriteErr gives a raw write's error the shape net.Conn's Write would.
func wrapWriteErr(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return &net.OpError{Op: "write", Net: "raw", Err: errno}
	}
	return err
}
