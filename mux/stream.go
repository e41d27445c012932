package mux

import (
	"net"
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

	writeMu sync.Mutex  // one Write, WriteLast or CloseWrite at a time, so that each call's frames are contiguous
	opened  atomic.Bool // the peer has been told of the stream

	// The Smux transport's admission status byte: sent before an accepted
	// stream's first byte, read before an opened stream's (see smux.go).
	smuxStatusDone atomic.Bool
	smuxStatusMu   sync.Mutex
	smuxStatusErr  error
	// The application's read deadline, which the Smux transport restores
	// after a bounded wait of its own (unix nanos, 0 for none).
	smuxReadDeadline atomic.Int64
	smuxPeerClosed   atomic.Bool // the peer closed the stream: writes fail (see smux.go)

	// What the send buffer holds of the stream's end; guarded by the
	// session's wmu. Once queuedEnd is set no DATA frame of the stream is
	// queued any more.
	queuedEnd   bool // END is queued, or the stream ended before its first frame
	queuedReset bool // RESET is queued
	// The stream's place in the send schedule (see writer.go); guarded by
	// the session's wmu.
	priority   Priority
	batch      uint32      // the batch that batchBytes counts in
	batchBytes int32       // bytes of data the stream has in that batch
	streaming  atomic.Bool // its last act was to queue data, not to read

	// The session's bookkeeping of an incoming stream; guarded by the
	// session's mu (see session.go, forget and release).
	inTable   bool     // counted toward MaxIncomingStreams: not yet forgotten
	forgotten bool     // the session has forgotten the stream and freed its slot
	app       appState // whether the application has the stream
	handled   bool     // served by a HandleType handler, whose return lets it go

	mu          sync.Mutex
	send, recv  half  // the directions' states, moved by endLocked
	sendErr     error // why Write fails, once send has left halfOpen
	recvErr     error // why Read fails, once recv is halfFailed
	closed      bool  // Close or Reset was called
	aborted     bool  // OnAbort's condition was met
	onAbort     func()
	rbuf        []byte  // received bytes are rbuf[roff:]
	rbox        *[]byte // rbuf's pool box: set whenever rbuf is, given back when rbuf goes
	roff        int
	delivering  bool  // the reader goroutine is filling rbuf past len
	turnGranted bool  // a flusher gave this stream's writer a turn in the open batch
	recvWindow  int   // bytes the peer may still send
	unacked     int   // bytes read but not yet credited back to the peer
	sendWindow  int   // bytes this side may still send
	readers     int32 // goroutines waiting on readWake
	writers     int32 // goroutines waiting on writeWake
	readWake    chan struct{}
	writeWake   chan struct{}
	handle      func(*Stream) // for the reader goroutine to start, see readLoop
	rdl, wdl    deadline
}

// appState is where an incoming stream stands with the application.
type appState uint8

const (
	appQueued   appState = iota // waiting for an accept or a free handler slot
	appHeld                     // accepted, or its handler runs
	appReleased                 // closed or reset by the application, its handler returned, or never delivered
)

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
// error carrying the code after a Reset. Concurrent Reads are allowed:
// each gets a share of the bytes, and all of them see the end.
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
	if st.streaming.Load() {
		st.streaming.Store(false)
	}
	st.mu.Lock()
	for {
		if st.roff < len(st.rbuf) && !st.closed {
			n := copy(p, st.rbuf[st.roff:])
			st.roff += n
			if st.roff == len(st.rbuf) && !st.delivering {
				st.releaseRecvBufLocked() // a stream waiting for input holds no buffer
			}
			credit := st.creditLocked(n)
			if st.roff < len(st.rbuf) && st.readers > 0 {
				signal(st.readWake) // another reader may take the rest
			}
			st.mu.Unlock()
			if credit > 0 {
				st.sess.sendControl(frameHeader{length: 4, typ: frameWindowUpdate, streamID: st.id.Load()}, uint32(credit))
			}
			return n, nil
		}
		if err := st.readErrLocked(); err != nil {
			if st.readers > 0 {
				signal(st.readWake) // the end holds for every reader: pass it on
			}
			st.mu.Unlock()
			return 0, err
		}
		wake := st.waitChan(&st.readWake)
		st.readers++
		st.mu.Unlock()
		<-wake
		st.mu.Lock()
		st.readers--
	}
}

// waitChan returns the stream's wake-up channel, making it on first use.
func (st *Stream) waitChan(c *chan struct{}) chan struct{} {
	if *c == nil {
		*c = wakePool.Get().(chan struct{})
	}
	return *c
}

// wakeLocked wakes a waiting reader and the waiting writer; a woken reader
// wakes the next (see Read).
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
// vain. A Write under way opens the stream itself; waiting for it could
// deadlock, since it may wait for window that only this Read gives back.
func (st *Stream) announce() {
	if !st.writeMu.TryLock() {
		return
	}
	defer st.writeMu.Unlock()
	if !st.opened.Load() {
		st.writeLocked(nil, false)
	}
}

// Write writes p to the stream, waiting for the peer's flow-control credit
// when its window is full, and for room in the session's send buffer when
// the connection is congested. A deadline, Close, Reset and the end of the
// stream or session end the wait.
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
	done := st.send == halfEnded && !st.closed
	st.mu.Unlock()
	if done {
		return nil
	}
	_, err := st.writeLocked(nil, true)
	return err
}

// WriteLast writes p and ends this side's direction, as Write then
// CloseWrite would, but in one frame where p fits. On the Smux transport it
// is Write, and the direction stays open; but on a stream the peer opened
// its slot frees before p leaves, since the peer, which cannot see this
// side's close, may open its next stream as soon as it has read p.
func (st *Stream) WriteLast(p []byte) (int, error) {
	if st.sm != nil {
		if st.in {
			return st.smuxWriteLastIn(p)
		}
		return st.smuxWrite(p)
	}
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	return st.writeLocked(p, true)
}

// writeLocked sends p in frames as the window allows, ending the direction
// when end is set; an empty p sends one empty frame. The caller holds
// writeMu.
func (st *Stream) writeLocked(p []byte, end bool) (int, error) {
	written := 0
	maxFrame := int(st.sess.peer.maxFrameSize) - 5 // room for the stream type
	for {
		st.mu.Lock()
		if err := st.writeErrLocked(); err != nil {
			st.mu.Unlock()
			return written, err
		}
		n := len(p)
		if n > 0 {
			if st.sendWindow == 0 {
				wake := st.waitChan(&st.writeWake)
				st.writers++
				st.mu.Unlock()
				<-wake
				st.mu.Lock()
				st.writers--
				st.mu.Unlock()
				continue
			}
			n = min(n, st.sendWindow, maxFrame)
			st.sendWindow -= n
		}
		st.mu.Unlock()
		last := end && n == len(p)
		if err := st.sess.queueData(st, p[:n], last); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
		if len(p) == 0 && (last || !end) {
			return written, nil
		}
	}
}

// OnAbort arranges for f to be called once if the stream ends abnormally
// for a reason other than this side's Close or Reset: reset by the peer,
// refused, excluded by the peer's GoAway, or cut off by the end of the
// session, before both directions finished. f runs with no lock of the
// session held, on whichever goroutine noticed the abort (the session's
// reader, a writer, keepalive, Close or Kill), and must not block;
// cancelling a context is its intended use. If the stream has been
// aborted already, f runs before OnAbort returns. A later call replaces f.
// On the Smux transport, where a peer's close and its abort look the
// same, f runs if the peer closes the stream, or the session ends, before
// this side closes it.
func (st *Stream) OnAbort(f func()) error {
	if st.sm != nil {
		st.smuxOnAbort(f)
		return nil
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

// Close closes both directions, as closing a TCP connection does: what was
// written is delivered, then the peer reads io.EOF; if the peer has not
// finished sending, the stream is then reset with ResetCancel, so that its
// further writes fail. Unread input is discarded, and blocked Reads and
// Writes return ErrStreamClosed. Close never blocks on the peer.
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
	sendEnd := st.send == halfOpen
	sendReset := st.recv == halfOpen
	a := st.endLocked(change{send: halfEnded, sendErr: ErrStreamClosed, recv: halfFailed, recvErr: ErrStreamClosed, by: byApp, drop: true})
	st.sendErr, st.recvErr = ErrStreamClosed, ErrStreamClosed // whatever ended them, as net.Conn's Close
	st.releaseWakeLocked()
	st.mu.Unlock()
	st.sess.queueEnd(st, sendEnd, sendReset, ResetCancel, &a)
	a.do()
	st.sess.release(st)
	return nil
}

// Reset aborts both directions with code: the peer's reads and writes fail
// with a *ResetError carrying it, and so do this side's. Unread input is
// discarded. On the Smux transport the stream is closed and ErrUnsupported
// returned.
func (st *Stream) Reset(code uint32) error {
	if st.sm != nil {
		st.smuxClose()
		return ErrUnsupported
	}
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	wasFinished := st.finishedLocked()
	err := &ResetError{Code: code}
	a := st.endLocked(change{send: halfFailed, sendErr: err, recv: halfFailed, recvErr: err, by: byApp, drop: true})
	st.releaseWakeLocked()
	st.mu.Unlock()
	st.sess.queueEnd(st, false, !wasFinished, code, &a)
	a.do()
	st.sess.release(st)
	return nil
}

// dropInputLocked discards unread input.
func (st *Stream) dropInputLocked() {
	st.roff = len(st.rbuf)
	if !st.delivering {
		st.releaseRecvBufLocked()
	}
}

// LocalAddr returns the session's local address.
func (st *Stream) LocalAddr() net.Addr { return st.sess.LocalAddr() }

// RemoteAddr returns the session's remote address.
func (st *Stream) RemoteAddr() net.Addr { return st.sess.RemoteAddr() }

var _ net.Conn = (*Stream)(nil)
