// Package bufpool recycles byte buffers by size class. The classes are
// powers of two, so a buffer of any size up to the largest class is reused
// by the next request of its size, a mebibyte as a kilobyte; a buffer past
// the largest class is left to the garbage collector, and sync.Pool lets go
// of what a quiet process no longer uses, so the pools pin no more than
// recent traffic needed.
package bufpool

import (
	"math/bits"
	"sync"
)

// Pools holds a pool of buffers for each size class from 1<<minClass to
// 1<<maxClass bytes: the buffers of class c have a capacity of at least
// 1<<c. All methods are safe for concurrent use.
type Pools struct {
	minClass, maxClass int
	pools              []sync.Pool
}

// New returns the pools of the classes from 1<<minClass to 1<<maxClass
// bytes.
func New(minClass, maxClass int) *Pools {
	return &Pools{minClass: minClass, maxClass: maxClass, pools: make([]sync.Pool, maxClass-minClass+1)}
}

// Class returns the size class that holds buffers of n bytes: the least
// class, from minClass on, of at least n bytes. It may exceed maxClass.
func (p *Pools) Class(n int) int {
	if n <= 1<<p.minClass {
		return p.minClass
	}
	return bits.Len(uint(n - 1))
}

// ClassCap returns the capacity of the buffers of n's class, or n past the
// largest class.
func (p *Pools) ClassCap(n int) int {
	if c := p.Class(n); c <= p.maxClass {
		return 1 << c
	}
	return n
}

// Get returns an empty pooled buffer with room for at least n bytes, or
// nil when its class has none or n is past the largest class. It never
// allocates, so that a size a peer announces costs nothing until its bytes
// arrive.
func (p *Pools) Get(n int) *[]byte {
	c := p.Class(n)
	if c > p.maxClass {
		return nil
	}
	bp, _ := p.pools[c-p.minClass].Get().(*[]byte)
	return bp
}

// Put returns bp's buffer to the pool of the largest class it can serve;
// one under the smallest class or past the largest is dropped. Nothing may
// refer to the buffer any more.
func (p *Pools) Put(bp *[]byte) {
	c := bits.Len(uint(cap(*bp))) - 1 // 1<<c <= cap
	if c < p.minClass || c > p.maxClass {
		return
	}
	*bp = (*bp)[:0]
	p.pools[c-p.minClass].Put(bp)
}
