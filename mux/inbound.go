package mux

import "io"

// What the reader goroutine does to a stream: it fills the stream's
// buffer within the stream's window, takes the peer's credit, and ends
// the stream's directions as the peer's frames say.

// deliver moves an n-byte DATA payload from br into the stream. A payload
// beyond the stream's window resets the stream; only a connection error is
// returned.
func (st *Stream) deliver(br *connReader, n int, end bool) error {
	st.mu.Lock()
	if st.recv != halfOpen || st.closed {
		// The peer's END may finish a stream whose Close is still under
		// way: the peer has forgotten it, so must this side, now (see
		// endLocked), or the peer's next stream could be refused.
		var a afterEnd
		if end {
			a = st.endLocked(change{recv: halfEnded, by: byPeer})
		}
		st.mu.Unlock()
		a.do()
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
	for n > 0 {
		// The buffer grows as the bytes arrive, at most deliverAhead
		// ahead of them, whatever length the header claims.
		k := min(n, max(br.Buffered(), deliverAhead))
		region := st.reserveLocked(k)
		st.delivering = true
		st.mu.Unlock()
		_, err := io.ReadFull(br, region)
		st.mu.Lock()
		st.delivering = false
		if err != nil {
			st.mu.Unlock()
			return err
		}
		n -= k
		if st.recv != halfOpen || st.closed { // ended while the bytes arrived
			st.dropInputLocked()
			st.mu.Unlock()
			if _, err := br.Discard(n); err != nil {
				return err
			}
			st.mu.Lock()
			break
		}
		st.rbuf = st.rbuf[:len(st.rbuf)+k]
	}
	if !end {
		if st.readers > 0 { // else a later Read finds the bytes without waiting
			signal(st.readWake)
		}
		st.mu.Unlock()
		return nil
	}
	a := st.endLocked(change{recv: halfEnded, by: byPeer})
	st.mu.Unlock()
	a.do()
	return nil
}

// deliverAhead bounds how far a stream's buffer grows ahead of the bytes
// of a DATA frame that have arrived: a header claiming 16 MiB costs no
// more until they come. A frame of the default MaxFrameSize is still read
// at once.
const deliverAhead = defaultMaxFrameSize

// reserveLocked makes room for n more bytes after rbuf's length and
// returns that room.
func (st *Stream) reserveLocked(n int) []byte {
	if st.rbox == nil {
		st.takeRecvBufLocked(n)
	}
	if st.roff == len(st.rbuf) {
		st.rbuf, st.roff = st.rbuf[:0], 0
	}
	if cap(st.rbuf)-len(st.rbuf) < n {
		unread := len(st.rbuf) - st.roff
		if unread+n <= cap(st.rbuf) {
			copy(st.rbuf, st.rbuf[st.roff:])
		} else {
			// A pooled buffer of the next class up, at least: the buffer
			// doubles, so a stream that receives much moves its bytes few
			// times.
			grown := getRecvBuf(max(unread+n, 2*cap(st.rbuf)))
			*grown = append(*grown, st.rbuf[st.roff:]...)
			putRecvBuf(st.rbox)
			st.rbox, st.rbuf = grown, *grown
		}
		st.rbuf, st.roff = st.rbuf[:unread], 0
	}
	return st.rbuf[len(st.rbuf) : len(st.rbuf)+n]
}

// creditLocked counts n bytes as read and returns the window to give back
// to the peer, once half the window has been read.
func (st *Stream) creditLocked(n int) int {
	st.unacked += n
	if st.unacked < st.sess.cfg.StreamWindow/2 || st.recv != halfOpen {
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
// GoAway that excludes the stream. What the peer sent before its END stays
// readable.
func (st *Stream) failBy(err error) {
	st.end(change{send: halfFailed, sendErr: err, recv: halfFailed, recvErr: err, by: byPeer})
}

// neverSent fails both directions of an outgoing stream whose first frame
// can no longer be sent, the peer's GoAway or the session's end having
// come first, with err, which says that the peer never processed it: a
// Read then returns err instead of waiting for a peer that will never
// hear of the stream, and the stream gives back its slot. It returns err.
func (st *Stream) neverSent(err error) error {
	st.end(change{send: halfFailed, sendErr: err, recv: halfFailed, recvErr: err, by: bySession})
	return err
}

// resetLocally resets the stream for a fault of the peer's, telling it.
func (st *Stream) resetLocally(code uint32) {
	err := &ResetError{Code: code}
	st.mu.Lock()
	a := st.endLocked(change{send: halfFailed, sendErr: err, recv: halfFailed, recvErr: err, by: byPeer})
	st.mu.Unlock()
	st.sess.queueEnd(st, false, true, code, &a)
	a.do()
}

// sessionEnded fails whatever the stream still expected from the session.
// A stream that never reached the wire fails as never processed.
func (st *Stream) sessionEnded(err error) {
	if !st.opened.Load() {
		err = refusedBy(err)
	}
	st.end(change{send: halfFailed, sendErr: err, recv: halfFailed, recvErr: err, by: bySession})
}
