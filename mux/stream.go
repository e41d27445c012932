package mux

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/xtaci/smux"
)

// A Stream is one full-duplex byte stream of a session. It is a net.Conn:
// Read, Write and Close behave as on TCP, deadlines work, and in addition
// CloseWrite ends only this side's direction and Reset aborts both.
//
// A stream is never closed behind the application's back: one the
// application drops stays open until the session ends.
type Stream struct {
	sess *Session
	typ  StreamType
	in   bool          // opened by the peer
	id   atomic.Uint32 // 0 until an outgoing stream sends its first frame
	sm   *smux.Stream  // set on the Smux transport, which uses nothing below

	writeMu sync.Mutex  // one writer at a time, so frames keep their order
	opened  atomic.Bool // the peer has been told of the stream

	// The Smux transport's admission status byte: sent before an accepted
	// stream's first byte, read before an opened stream's (see smux.go).
	smuxStatusDone atomic.Bool
	smuxStatusMu   sync.Mutex
	smuxStatusErr  error

	mu         sync.Mutex
	rbuf       []byte  // received bytes are rbuf[roff:]
	rbox       *[]byte // rbuf's pool box, if it came from the pool
	waiters    int     // goroutines waiting on readWake or writeWake
	roff       int
	delivering bool // the reader goroutine is filling rbuf past len
	recvEnd    bool // the peer ended its direction
	recvWindow int  // bytes the peer may still send
	unacked    int  // bytes read but not yet credited back to the peer
	rerr       error
	readWake   chan struct{}
	sendWindow int // bytes this side may still send
	sentEnd    bool
	werr       error
	writeWake  chan struct{}
	closed     bool          // Close was called
	gone       bool          // the session has forgotten the stream
	accepted   bool          // incoming: taken by an accept
	onAbort    func()        // see OnAbort
	handle     func(*Stream) // set by openIncoming for the reader goroutine to start
	aborted    bool          // ended by the peer or the session, not by this side
	rdl, wdl   deadline

	// endedPending marks an incoming stream that finished before an accept
	// took it; guarded by the session's mu.
	endedPending bool
}

func newStream(s *Session, id uint32, t StreamType) *Stream {
	st := &Stream{
		sess:       s,
		typ:        t,
		in:         id != 0,
		recvWindow: s.cfg.StreamWindow,
		sendWindow: int(s.peer.initialWindow),
	}
	if id != 0 {
		st.id.Store(id)
		st.opened.Store(true)
	}
	return st
}

// ID returns the stream's id on the wire, or 0 for a stream this side
// opened and has not yet sent anything on.
func (st *Stream) ID() uint32 {
	if st.sm != nil {
		return st.sm.ID()
	}
	return st.id.Load()
}

// Type returns the stream's type.
func (st *Stream) Type() StreamType { return st.typ }

// Session returns the session the stream belongs to.
func (st *Stream) Session() *Session { return st.sess }

func (st *Stream) outgoing() bool { return !st.in }

// Read reads what the peer sent. It returns io.EOF after the peer's
// CloseWrite or Close once everything before it has been read, and an
// error carrying the code after a Reset.
func (st *Stream) Read(p []byte) (int, error) {
	if st.sm != nil {
		return st.smuxRead(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !st.opened.Load() {
		st.announce()
	}
	st.mu.Lock()
	for {
		if st.roff < len(st.rbuf) {
			n := copy(p, st.rbuf[st.roff:])
			st.roff += n
			credit := st.creditLocked(n)
			if st.roff < len(st.rbuf) {
				signal(st.readWake) // another reader may take the rest
			}
			st.mu.Unlock()
			if credit > 0 {
				st.sess.sendControl(frameHeader{length: 4, typ: frameWindowUpdate, streamID: st.id.Load()}, true, uint32(credit))
			}
			return n, nil
		}
		if st.recvEnd {
			st.mu.Unlock()
			return 0, io.EOF
		}
		if st.rerr != nil {
			err := st.rerr
			st.mu.Unlock()
			return 0, err
		}
		if st.rdl.expired {
			st.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		wake := st.waitChan(&st.readWake)
		st.waiters++
		st.mu.Unlock()
		<-wake
		st.mu.Lock()
		st.waiters--
	}
}

// waitChan returns the stream's wake-up channel, making it on first use.
func (st *Stream) waitChan(c *chan struct{}) chan struct{} {
	if *c == nil {
		*c = wakePool.Get().(chan struct{})
	}
	return *c
}

// wakeLocked wakes every waiter of the stream; each wakes the next.
func (st *Stream) wakeLocked() {
	if st.readWake != nil {
		signal(st.readWake)
	}
	if st.writeWake != nil {
		signal(st.writeWake)
	}
}

// announce tells the peer of a stream this side opened and has not written
// to, so that a Read waiting for the peer to speak first is not waiting in
// vain.
func (st *Stream) announce() {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if !st.opened.Load() {
		st.writeLocked(nil, false)
	}
}

// Write writes p to the stream, waiting for the peer's flow-control credit
// when its window is full.
func (st *Stream) Write(p []byte) (int, error) {
	if st.sm != nil {
		return st.smuxWrite(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	return st.writeLocked(p, false)
}

// CloseWrite ends this side's direction: the peer reads everything written
// so far and then io.EOF. Reading goes on. On the Smux transport it returns
// ErrUnsupported, since smux's half-close loses data.
func (st *Stream) CloseWrite() error {
	if st.sm != nil {
		return ErrUnsupported
	}
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	st.mu.Lock()
	done := st.sentEnd
	st.mu.Unlock()
	if done {
		return nil
	}
	_, err := st.writeLocked(nil, true)
	return err
}

// WriteLast writes p and ends this side's direction, as Write then
// CloseWrite would, but in one frame where p fits. On the Smux transport it
// is Write, and the direction stays open.
func (st *Stream) WriteLast(p []byte) (int, error) {
	if st.sm != nil {
		return st.smuxWrite(p)
	}
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	return st.writeLocked(p, true)
}

// OnAbort arranges for f to be called once if the stream ends abnormally:
// reset by the peer, refused, or cut off by the end of the session, before
// both directions finished. f runs on the session's reader goroutine and
// must not block; cancelling a context is its intended use. If the stream
// has been aborted already, f runs before OnAbort returns. A later call
// replaces f. On the Smux transport it returns ErrUnsupported.
func (st *Stream) OnAbort(f func()) error {
	if st.sm != nil {
		return ErrUnsupported
	}
	st.mu.Lock()
	aborted := st.aborted
	if !aborted {
		st.onAbort = f
	}
	st.mu.Unlock()
	if aborted {
		f()
	}
	return nil
}

// abortLocked marks the stream aborted and returns the OnAbort function to
// run once the lock is released, if any.
func (st *Stream) abortLocked() func() {
	if st.closed || st.aborted {
		return nil
	}
	st.aborted = true
	f := st.onAbort
	st.onAbort = nil
	return f
}

// writeLocked sends p in frames as the window allows, ending the direction
// when end is set; an empty p sends one empty frame. The caller holds
// writeMu.
func (st *Stream) writeLocked(p []byte, end bool) (int, error) {
	written := 0
	maxFrame := int(st.sess.peer.maxFrameSize) - 5 // room for the stream type
	for {
		st.mu.Lock()
		if st.werr != nil {
			err := st.werr
			st.mu.Unlock()
			return written, err
		}
		if st.wdl.expired {
			st.mu.Unlock()
			return written, os.ErrDeadlineExceeded
		}
		n := len(p)
		if n > 0 {
			if st.sendWindow == 0 {
				wake := st.waitChan(&st.writeWake)
				st.waiters++
				st.mu.Unlock()
				<-wake
				st.mu.Lock()
				st.waiters--
				st.mu.Unlock()
				continue
			}
			n = min(n, st.sendWindow, maxFrame)
			st.sendWindow -= n
		}
		last := end && n == len(p)
		if last {
			st.sentEnd = true
			st.werr = ErrWriteClosed
		}
		finished := last && st.finishedLocked()
		st.mu.Unlock()

		var queued func()
		if finished {
			queued = func() { st.sess.forget(st) }
		}
		err := st.sess.sendDataThen(st, p[:n], last, queued)
		if err != nil {
			st.abort(err)
			return written, err
		}
		st.opened.Store(true)
		written += n
		p = p[n:]
		if len(p) == 0 && (last || !end) {
			st.mu.Lock() // sendWindow and writeWake change under the reader goroutine
			if st.sendWindow > 0 && st.writeWake != nil {
				signal(st.writeWake)
			}
			st.mu.Unlock()
			return written, nil
		}
	}
}

// finishedLocked reports, once, that both directions are over, so the
// session can forget the stream.
func (st *Stream) finishedLocked() bool {
	if st.gone || !(st.recvEnd || st.rerr != nil) || !(st.sentEnd || st.werr != nil) {
		return false
	}
	st.gone = true
	return true
}

// Close closes both directions, as closing a TCP connection does: what was
// written is delivered, then the peer reads io.EOF; if the peer has not
// finished sending, its further writes fail. Close never blocks on the
// peer.
func (st *Stream) Close() error {
	if st.sm != nil {
		return st.smuxClose()
	}
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	sendEnd := !st.sentEnd && st.werr == nil
	sendReset := !st.recvEnd && st.rerr == nil && !st.gone
	if st.werr == nil || st.werr == ErrWriteClosed {
		st.werr = ErrStreamClosed
	}
	if st.rerr == nil {
		st.rerr = ErrStreamClosed
	}
	st.recvEnd = false // Read reports the close, not EOF
	st.dropInputLocked()
	st.stopDeadlinesLocked()
	st.wakeLocked()
	st.releaseWakeLocked()
	finished := st.finishedLocked()
	st.mu.Unlock()

	// The stream is forgotten as soon as its first closing frame is queued
	// (see sendDataThen): the peer may finish the stream on the END alone.
	// Without frames to send, it is forgotten at the end.
	forget := func() {
		if finished {
			finished = false
			st.sess.forget(st)
		}
	}
	if sendEnd || sendReset {
		st.writeMu.Lock() // after any Write in progress, which now stops
		if st.opened.Load() {
			if sendEnd {
				st.sess.sendDataThen(st, nil, true, forget)
			}
			if sendReset {
				st.sess.sendControlThen(frameHeader{length: 4, typ: frameReset, streamID: st.id.Load()}, true, forget, ResetCancel)
			}
		}
		st.writeMu.Unlock()
	}
	forget()
	return nil
}

// Reset aborts both directions with code: the peer's reads and writes fail
// with a *ResetError carrying it, and so do this side's. On the Smux
// transport the stream is closed and ErrUnsupported returned.
func (st *Stream) Reset(code uint32) error {
	if st.sm != nil {
		st.sm.Close()
		return ErrUnsupported
	}
	st.mu.Lock()
	if st.gone || st.closed {
		st.mu.Unlock()
		return nil
	}
	err := &ResetError{Code: code}
	st.werr, st.rerr, st.recvEnd = err, err, false
	st.dropInputLocked()
	st.wakeLocked()
	st.finishedLocked()
	st.mu.Unlock()
	forgotten := false
	forget := func() { // once the RESET is queued; see sendDataThen
		forgotten = true
		st.sess.forget(st)
	}
	st.writeMu.Lock() // after any Write in progress, which now stops
	if st.opened.Load() {
		st.sess.sendControlThen(frameHeader{length: 4, typ: frameReset, streamID: st.id.Load()}, true, forget, code)
	}
	st.writeMu.Unlock()
	if !forgotten {
		st.sess.forget(st)
	}
	return nil
}

// dropInputLocked discards unread input.
func (st *Stream) dropInputLocked() {
	st.roff = len(st.rbuf)
	if !st.delivering {
		st.releaseRecvBufLocked()
	}
}

// abort fails the stream after the session could not send its frame.
func (st *Stream) abort(err error) {
	st.mu.Lock()
	if st.werr == nil || st.werr == ErrWriteClosed {
		st.werr = err
	}
	if st.rerr == nil && !st.recvEnd {
		st.rerr = err
	}
	st.wakeLocked()
	finished := st.finishedLocked()
	st.mu.Unlock()
	if finished {
		st.sess.forget(st)
	}
}

// LocalAddr returns the session's local address.
func (st *Stream) LocalAddr() net.Addr { return st.sess.LocalAddr() }

// RemoteAddr returns the session's remote address.
func (st *Stream) RemoteAddr() net.Addr { return st.sess.RemoteAddr() }

var _ net.Conn = (*Stream)(nil)
