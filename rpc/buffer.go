package rpc

import "github.com/muxrpc/muxrpc/internal/bufpool"

// Calls assemble their writes, and read the parts they receive, in pooled
// buffers of size classes (see bufpool) from 1<<minBufClass to
// 1<<maxBufClass bytes, so that a 1 MiB message reuses a buffer as a
// 64-byte one does.

const (
	minBufClass = 10 // 1 KiB
	maxBufClass = 23 // 8 MiB: a message of the default 4 MiB limit and its parts fit
)

var bufs = bufpool.New(minBufClass, maxBufClass)

// getBuf returns an empty pooled buffer with room for at least n bytes,
// allocating one of the whole class when the class has none, so that it
// goes back to the pool that the next request of its size takes from.
func getBuf(n int) *[]byte {
	if bp := bufs.Get(n); bp != nil {
		return bp
	}
	return newBuf(bufs.ClassCap(n))
}

// newBuf allocates an empty buffer with room for n bytes.
func newBuf(n int) *[]byte {
	b := make([]byte, 0, n)
	return &b
}

// classCap returns the capacity of the buffers of n's class, or n past
// the largest class.
func classCap(n int) int { return bufs.ClassCap(n) }

// pooledBuf returns an empty pooled buffer with room for at least n bytes,
// or nil when its class has none: it never allocates. A reader uses it
// for the size a peer announces, which must cost this side nothing until
// the bytes arrive.
func pooledBuf(n int) *[]byte { return bufs.Get(n) }

// putBuf returns bp's buffer to its pool, or drops it (see bufpool). The
// caller must keep no reference to the buffer.
func putBuf(bp *[]byte) { bufs.Put(bp) }

// growBuf makes room for n more bytes after b, a prefix of bp's buffer.
// Where the buffer is too small, it copies b into a pooled buffer large
// enough, or a new one of exactly that size when the pool has none, and
// returns bp's buffer to the pool. It returns the box of the buffer b now
// lives in, and b.
func growBuf(bp *[]byte, b []byte, n int) (*[]byte, []byte) {
	if cap(b)-len(b) >= n {
		return bp, b
	}
	grown := pooledBuf(len(b) + n)
	if grown == nil {
		grown = newBuf(len(b) + n)
	}
	*grown = append(*grown, b...)
	putBuf(bp)
	return grown, *grown
}
