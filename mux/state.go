package mux

import (
	"io"
	"os"
)

// A native stream's life (PROTOCOL.md §4.2) is the state of its two
// directions, moved by one function, endLocked, which also releases what
// the new state no longer needs: deadline timers, unread input, the
// stream's slot in the session, and waiting readers and writers. Every way
// a stream ends goes through it: END sent or received, Close, Reset, the
// peer's RESET, a GoAway that excludes the stream, a flow-control
// violation, a failed write and the end of the session.

// half is the state of one direction of a stream.
type half uint8

const (
	halfOpen   half = iota // bytes flow
	halfEnded              // ended in order by END: what was received stays readable, then io.EOF
	halfFailed             // ended abnormally: reads or writes fail with the direction's error
)

// cause says who ends a stream's directions, which decides what happens to
// unread input and whether OnAbort runs.
type cause uint8

const (
	byApp     cause = iota // this side's application: CloseWrite, Close, Reset
	byPeer                 // the peer: its END, RESET or GoAway, or a flow-control violation
	bySession              // the session ended, or could not send the stream's frame
)

// change describes new states for a stream's directions. A zero half
// (halfOpen) leaves that direction as it is.
type change struct {
	send, recv       half
	sendErr, recvErr error
	by               cause
	drop             bool // discard unread input: the application closed or reset the stream
}

// afterEnd is what endLocked leaves to do once the stream's lock is
// released.
type afterEnd struct {
	st      *Stream
	forget  bool   // the stream just finished: the session frees its slot
	onAbort func() // the application's OnAbort, to run once
}

// endLocked moves the stream's directions as c says and releases what the
// new state no longer needs. A direction that has left halfOpen never
// returns to it, and keeps its first error, with two exceptions: a failure
// after this side's END replaces ErrWriteClosed, so that Write reports the
// reset, and a receiving direction ended by the peer's END fails when the
// application discards its unread input.
// Input is discarded when c says so, and when the peer aborts a direction
// it had not ended; after the end of the session, what arrived stays
// readable. The caller holds st.mu and calls
// the result's do once it holds no lock.
func (st *Stream) endLocked(c change) afterEnd {
	wasFinished := st.finishedLocked()
	if c.send != halfOpen && (st.send == halfOpen || c.send == halfFailed && st.sendErr == ErrWriteClosed) {
		st.send, st.sendErr = c.send, c.sendErr
		st.wdl.stop()
	}
	recvAborted := false
	if c.recv != halfOpen && (st.recv == halfOpen || c.drop && st.recv == halfEnded) {
		st.recv, st.recvErr = c.recv, c.recvErr
		recvAborted = c.recv == halfFailed
		st.rdl.stop()
	}
	if c.drop || recvAborted && c.by == byPeer {
		st.dropInputLocked()
	}
	st.wakeLocked()
	// A stream is forgotten once it finishes, and again (a no-op) when the
	// peer's frame comes while this side's ending is still under way: the
	// peer has forgotten the stream then, and this side must not go on
	// counting it while the rest of its ending waits for the send path.
	a := afterEnd{st: st, forget: st.finishedLocked() && (!wasFinished || c.by == byPeer)}
	if c.by != byApp && !st.closed && !st.aborted && (st.send == halfFailed || st.recv == halfFailed) {
		st.aborted = true
		a.onAbort, st.onAbort = st.onAbort, nil
	}
	return a
}

// end is endLocked for a caller that does not hold st.mu.
func (st *Stream) end(c change) {
	st.mu.Lock()
	a := st.endLocked(c)
	st.mu.Unlock()
	a.do()
}

// do completes a state change: the session forgets a finished stream, and
// the application hears of an abort. The caller holds no lock.
func (a afterEnd) do() {
	a.forgetNow()
	if a.onAbort != nil {
		a.onAbort()
	}
}

// forgetNow has the session forget a stream that just finished, once. The
// send path calls it with wmu held, between queuing the stream's last frame
// and flushing it (see Session.forget).
func (a *afterEnd) forgetNow() {
	if a.forget {
		a.forget = false
		a.st.sess.forget(a.st)
	}
}

// finishedLocked reports whether both directions have ended.
func (st *Stream) finishedLocked() bool {
	return st.send != halfOpen && st.recv != halfOpen
}

// readErrLocked says why Read cannot wait for more bytes once the buffered
// ones are read, or nil.
func (st *Stream) readErrLocked() error {
	switch {
	case st.recv == halfEnded:
		return io.EOF
	case st.recv == halfFailed:
		return st.recvErr
	case st.rdl.expired:
		return os.ErrDeadlineExceeded
	}
	return nil
}

// writeErrLocked says why Write cannot send now, or nil.
func (st *Stream) writeErrLocked() error {
	switch {
	case st.send != halfOpen:
		return st.sendErr
	case st.wdl.expired:
		return os.ErrDeadlineExceeded
	}
	return nil
}
