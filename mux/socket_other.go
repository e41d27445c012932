//go:build !unix

package mux

import (
	"net"
	"sync/atomic"
)

// newRawSocket returns nil: raw writes are used on Unix systems only.
func newRawSocket(net.Conn, func(drained bool), *atomic.Uint64) socket { return nil }

// newRawReader leaves c to the connection's Read: raw reads are used on
// Unix systems only.
func newRawReader(*connReader) {}
