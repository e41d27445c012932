package mux

import (
	"sync"

	"github.com/muxrpc/muxrpc/internal/bufpool"
)

// Streams are short-lived in RPC use, so the buffers and channels a stream
// needs are recycled when the stream is closed, instead of allocated anew
// for every call.

// Receive buffers come in size classes (see bufpool), from
// 1<<minRecvBufClass to 1<<maxRecvBufClass bytes, so that a stream that
// received a mebibyte recycles its buffer as one that received a few bytes
// does.
const (
	minRecvBufClass = 10 // 1 KiB
	maxRecvBufClass = 20 // 1 MiB: four times the default StreamWindow
)

var (
	recvBufs = bufpool.New(minRecvBufClass, maxRecvBufClass)
	wakePool = sync.Pool{New: func() any { return make(chan struct{}, 1) }}
)

// getRecvBuf returns an empty receive buffer with room for at least n
// bytes, from the pool of its class if it has one. One it allocates has
// room for n bytes, or 1<<minRecvBufClass, and no more: the peer's
// bytes decide how much a stream's buffer costs, not its size class.
func getRecvBuf(n int) *[]byte {
	if bp := recvBufs.Get(n); bp != nil {
		return bp
	}
	b := make([]byte, 0, max(n, 1<<minRecvBufClass))
	return &b
}

// putRecvBuf returns bp's buffer to the pool of the largest class it can
// serve, or drops it. Nothing may refer to the buffer any more.
func putRecvBuf(bp *[]byte) { recvBufs.Put(bp) }

// takeRecvBufLocked gives the stream a pooled receive buffer with room for
// at least n bytes.
func (st *Stream) takeRecvBufLocked(n int) {
	st.rbox = getRecvBuf(n)
	st.rbuf, st.roff = (*st.rbox)[:0], 0
}

// releaseRecvBufLocked returns the receive buffer to the pool. The reader
// goroutine must not be filling it.
func (st *Stream) releaseRecvBufLocked() {
	if st.rbox != nil {
		putRecvBuf(st.rbox)
	}
	st.rbox, st.rbuf, st.roff = nil, nil, 0
}

// releaseWakeLocked returns the wake-up channels to the pool once no one
// waits on them; nothing signals them after this, since signals are sent
// under the lock and only to non-nil channels.
func (st *Stream) releaseWakeLocked() {
	if st.readers > 0 || st.writers > 0 {
		return
	}
	for _, c := range []*chan struct{}{&st.readWake, &st.writeWake} {
		if *c != nil {
			select {
			case <-*c:
			default:
			}
			wakePool.Put(*c)
			*c = nil
		}
	}
}
