package mux

import (
	"bufio"
	"io"
)

// What the reader goroutine does to a stream: it fills the stream's
// buffer within the stream's window, takes the peer's credit, resets and
// ends it.

// deliver moves an n-byte DATA payload from br into the stream. A payload
// beyond the stream's window resets the stream; only a connection error is
// returned.
func (st *Stream) deliver(br *bufio.Reader, n int, end bool) error {
	st.mu.Lock()
	if st.rerr != nil || st.recvEnd {
		st.mu.Unlock()
		_, err := br.Discard(n)
		return err
	}
	if n > st.recvWindow {
		st.mu.Unlock()
		if _, err := br.Discard(n); err != nil {
			return err
		}
		st.resetLocally(ResetFlowControl)
		return nil
	}
	st.recvWindow -= n
	if n > 0 {
		region := st.reserveLocked(n)
		st.delivering = true
		st.mu.Unlock()
		_, err := io.ReadFull(br, region)
		st.mu.Lock()
		st.delivering = false
		if err != nil {
			st.mu.Unlock()
			return err
		}
		if st.rerr == nil {
			st.rbuf = st.rbuf[:len(st.rbuf)+n]
		}
	}
	if end && st.rerr == nil {
		st.recvEnd = true
	}
	if st.readWake != nil {
		signal(st.readWake)
	}
	finished := st.finishedLocked()
	st.mu.Unlock()
	if finished {
		st.sess.forget(st)
	}
	return nil
}

// reserveLocked makes room for n more bytes after rbuf's length and
// returns that room.
func (st *Stream) reserveLocked(n int) []byte {
	if st.rbuf == nil && n <= pooledBufferSize {
		st.takeRecvBufLocked()
	}
	if st.roff == len(st.rbuf) {
		st.rbuf, st.roff = st.rbuf[:0], 0
	}
	if cap(st.rbuf)-len(st.rbuf) < n {
		unread := len(st.rbuf) - st.roff
		if unread+n <= cap(st.rbuf) {
			copy(st.rbuf, st.rbuf[st.roff:])
		} else {
			grown := make([]byte, unread, max(unread+n, 2*cap(st.rbuf), 512))
			copy(grown, st.rbuf[st.roff:])
			st.rbuf = grown
		}
		st.rbuf, st.roff = st.rbuf[:unread], 0
	}
	return st.rbuf[len(st.rbuf) : len(st.rbuf)+n]
}

// creditLocked counts n bytes as read and returns the window to give back
// to the peer, once half the window has been read.
func (st *Stream) creditLocked(n int) int {
	st.unacked += n
	if st.unacked < st.sess.cfg.StreamWindow/2 || st.recvEnd || st.rerr != nil {
		return 0
	}
	credit := st.unacked
	st.unacked = 0
	st.recvWindow += credit
	return credit
}

// addCredit adds the peer's window update; it reports false if the window
// overflows.
func (st *Stream) addCredit(n int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sendWindow+n > maxWindow {
		return false
	}
	st.sendWindow += n
	if st.writeWake != nil {
		signal(st.writeWake)
	}
	return true
}

// failBy ends the stream with err from the peer's side: a RESET, or a
// GoAway that excludes the stream. It reports whether the session should
// forget the stream.
func (st *Stream) failBy(err error) bool {
	st.mu.Lock()
	if st.werr == nil || st.werr == ErrWriteClosed {
		st.werr = err
	}
	if !st.recvEnd && st.rerr == nil {
		st.rerr = err
		st.dropInputLocked()
	}
	st.wakeLocked()
	finished := st.finishedLocked()
	abort := st.abortLocked()
	st.mu.Unlock()
	if abort != nil {
		abort()
	}
	return finished
}

// resetLocally resets the stream for a fault of the peer's, telling it.
func (st *Stream) resetLocally(code uint32) {
	st.mu.Lock()
	err := &ResetError{Code: code}
	if st.werr == nil || st.werr == ErrWriteClosed {
		st.werr = err
	}
	if st.rerr == nil {
		st.rerr, st.recvEnd = err, false
		st.dropInputLocked()
	}
	st.wakeLocked()
	finished := st.finishedLocked()
	abort := st.abortLocked()
	st.mu.Unlock()
	if abort != nil {
		abort()
	}
	st.sess.sendControl(frameHeader{length: 4, typ: frameReset, streamID: st.id.Load()}, false, code)
	if finished {
		st.sess.forget(st)
	}
}

// sessionEnded fails whatever the stream still expected from the session.
func (st *Stream) sessionEnded(err error) {
	if !st.opened.Load() {
		err = refusedBy(err)
	}
	st.mu.Lock()
	if st.werr == nil {
		st.werr = err
	}
	if !st.recvEnd && st.rerr == nil {
		st.rerr = err
	}
	var abort func()
	if !st.gone {
		abort = st.abortLocked()
	}
	st.gone = true
	st.wakeLocked()
	st.mu.Unlock()
	if abort != nil {
		abort()
	}
}
