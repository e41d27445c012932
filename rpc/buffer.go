package rpc

import (
	"math/bits"
	"sync"
)

// Calls assemble their writes, and read the parts they receive, in pooled
// buffers. The pools are by size class, powers of two from minBufClass to
// maxBufClass, so that a 1 MiB message reuses a buffer as a 64-byte one
// does; a buffer past the largest class is left to the garbage collector,
// and sync.Pool lets go of what a quiet process no longer uses, so the
// pools pin no more than recent traffic needed.

const (
	minBufClass = 10 // 1 KiB
	maxBufClass = 23 // 8 MiB: a message of the default 4 MiB limit and its parts fit
)

// bufPools holds a pool of buffers for each size class: those of class c
// have a capacity of at least 1<<c bytes.
var bufPools [maxBufClass - minBufClass + 1]sync.Pool

// classFor returns the size class that holds buffers of n bytes, which may
// exceed maxBufClass.
func classFor(n int) int {
	if n <= 1<<minBufClass {
		return minBufClass
	}
	return bits.Len(uint(n - 1))
}

// getBuf returns an empty pooled buffer with room for at least n bytes,
// allocating one of the whole class when the class has none, so that it
// goes back to the pool that the next request of its size takes from.
func getBuf(n int) *[]byte {
	if bp := pooledBuf(n); bp != nil {
		return bp
	}
	return newBuf(classCap(n))
}

// newBuf allocates an empty buffer with room for n bytes.
func newBuf(n int) *[]byte {
	b := make([]byte, 0, n)
	return &b
}

// classCap returns the capacity of the buffers of n's class, or n past
// the largest class.
func classCap(n int) int {
	if c := classFor(n); c <= maxBufClass {
		return 1 << c
	}
	return n
}

// pooledBuf returns an empty pooled buffer with room for at least n bytes,
// or nil when its class has none: it never allocates. A reader uses it
// for the size a peer announces, which must cost this side nothing until
// the bytes arrive.
func pooledBuf(n int) *[]byte {
	c := classFor(n)
	if c > maxBufClass {
		return nil
	}
	bp, _ := bufPools[c-minBufClass].Get().(*[]byte)
	return bp
}

// putBuf returns bp's buffer to the pool of the largest class it can
// serve; one past the largest class, or under the smallest, is dropped.
// The caller must keep no reference to the buffer.
func putBuf(bp *[]byte) {
	c := bits.Len(uint(cap(*bp))) - 1 // 1<<c <= cap
	if c < minBufClass || c > maxBufClass {
		return
	}
	*bp = (*bp)[:0]
	bufPools[c-minBufClass].Put(bp)
}

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
