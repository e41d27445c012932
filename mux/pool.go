package mux

import "sync"

// Streams are short-lived in RPC use, so the buffers and channels a stream
// needs are recycled when the stream is closed, instead of allocated anew
// for every call.

const (
	pooledBufferSize = 1 << 10
	maxPooledBuffer  = 64 << 10
)

var (
	recvBufPool = sync.Pool{New: func() any {
		b := make([]byte, 0, pooledBufferSize)
		return &b
	}}
	wakePool = sync.Pool{New: func() any { return make(chan struct{}, 1) }}
)

// takeRecvBufLocked gives the stream a pooled receive buffer.
func (st *Stream) takeRecvBufLocked() {
	st.rbox = recvBufPool.Get().(*[]byte)
	st.rbuf, st.roff = (*st.rbox)[:0], 0
}

// releaseRecvBufLocked returns the receive buffer to the pool. The reader
// goroutine must not be filling it.
func (st *Stream) releaseRecvBufLocked() {
	if st.rbox != nil && cap(st.rbuf) <= maxPooledBuffer {
		*st.rbox = st.rbuf[:0]
		recvBufPool.Put(st.rbox)
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
