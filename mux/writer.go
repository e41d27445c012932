package mux

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// The send path. Every frame is appended to one shared buffer, and one
// flusher at a time writes the buffer out. A sender that finds no flush
// running first tries to write the buffer itself, without blocking (see
// socket.go), so a lone caller waits for no goroutine hop, and under load
// the frames of many callers leave in one syscall. What the kernel does not
// take at once, and everything on a connection that cannot be written
// without blocking, is written by writeLoop. So no sender, and never the
// reader goroutine, waits on a congested connection: senders of data wait
// only for room in the buffer, and that wait ends with the stream's
// deadline, Close, Reset, or the end of the session.
//
// Locks: wmu may be held while taking a stream's mu or the session's mu,
// never the other way around; the session's error is recorded by fail,
// which is never called with wmu held.

// flusher says who writes the send buffer now.
type flusher uint8

const (
	flushNone   flusher = iota // nobody: the buffer is empty, or about to be flushed by the sender that filled it
	flushInline                // a sender, without blocking
	flushLoop                  // writeLoop
)

// queueData queues one DATA frame of st, ending st's direction when end
// is set. It gives st its id when this is the stream's first frame, so ids
// reach the wire in increasing order. While the send buffer is full it
// waits for room, unless the frame is empty.
func (s *Session) queueData(st *Stream, p []byte, end bool) error {
	s.wmu.Lock()
	for len(p) > 0 && len(s.wbuf) >= sendBufferLimit && s.flusher != flushNone && s.writeErr == nil {
		if err := s.waitRoomLocked(st); err != nil {
			s.wmu.Unlock()
			return err
		}
	}
	if err := s.sendErrLocked(); err != nil {
		s.wmu.Unlock()
		if st.id.Load() == 0 {
			return st.neverSent(refusedBy(err))
		}
		return err
	}
	if st.queuedEnd { // Close or Reset came first
		s.wmu.Unlock()
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.writeErrLocked()
	}
	h := frameHeader{length: uint32(len(p)), typ: frameData, streamID: st.id.Load()}
	if end {
		h.flags |= flagEnd
	}
	if h.streamID == 0 {
		id, err := s.register(st)
		if err != nil {
			s.wmu.Unlock()
			return st.neverSent(err)
		}
		h.streamID = id
		st.opened.Store(true) // from here on the peer may process it
		h.flags |= flagOpen
		h.length += uint32(uvarintLen(uint64(st.typ)))
		s.wbuf = appendFrameHeader(s.wbuf, h)
		s.wbuf = binary.AppendUvarint(s.wbuf, uint64(st.typ))
	} else {
		s.wbuf = appendFrameHeader(s.wbuf, h)
	}
	s.wbuf = append(s.wbuf, p...)
	var a afterEnd
	if end {
		st.queuedEnd = true
		st.mu.Lock()
		a = st.endLocked(change{send: halfEnded, sendErr: ErrWriteClosed, by: byApp})
		st.mu.Unlock()
		a.forgetNow() // now that the END is queued, before it can leave: see Session.forget
	}
	err := s.flushLocked()
	s.wmu.Unlock()
	a.do()
	if err != nil {
		s.fail(err)
	}
	return nil
}

// queueEnd queues what ends st on the wire: END, when end is set and no
// END was queued, then RESET with code, when reset is set and none was
// queued. Both go in one piece, so no other stream's first frame comes
// between them, and the session forgets the stream, if a says it
// finished, before they can leave. A stream that never reached the wire
// sends nothing. From here on no DATA frame of st is queued.
func (s *Session) queueEnd(st *Stream, end, reset bool, code uint32, a *afterEnd) {
	s.wmu.Lock()
	queued := st.queuedEnd
	st.queuedEnd = true
	if st.id.Load() == 0 || s.sendErrLocked() != nil {
		s.wmu.Unlock()
		a.forgetNow()
		return
	}
	if end && !queued {
		s.wbuf = appendFrameHeader(s.wbuf, frameHeader{typ: frameData, flags: flagEnd, streamID: st.id.Load()})
	}
	if reset && !st.queuedReset {
		st.queuedReset = true
		s.wbuf = appendFrameHeader(s.wbuf, frameHeader{length: 4, typ: frameReset, streamID: st.id.Load()})
		s.wbuf = binary.BigEndian.AppendUint32(s.wbuf, code)
	}
	a.forgetNow()
	s.flushControlAndUnlock()
}

// waitRoomLocked waits, with wmu released meanwhile, until a flusher makes
// room in the send buffer for st, or st can write no more. Waiters are
// served in order, only as many as the room fits (see wakeRoomLocked).
func (s *Session) waitRoomLocked(st *Stream) error {
	st.mu.Lock()
	st.roomGranted = false // before a flusher can find st in the queue
	st.mu.Unlock()
	s.roomWaiters = append(s.roomWaiters, st)
	s.wmu.Unlock()
	st.mu.Lock()
	var err error
	for !st.roomGranted {
		if err = st.writeErrLocked(); err != nil {
			break
		}
		wake := st.waitChan(&st.writeWake)
		st.writers++
		st.mu.Unlock()
		select {
		case <-wake:
		case <-s.done:
		}
		st.mu.Lock()
		st.writers--
		if s.Err() != nil {
			err = s.Err()
			break
		}
	}
	st.mu.Unlock()
	s.wmu.Lock()
	if err != nil {
		if i := slices.Index(s.roomWaiters, st); i >= 0 {
			s.roomWaiters = slices.Delete(s.roomWaiters, i, i+1)
		} else {
			s.wakeRoomLocked() // st was granted room it will not use: pass it on
		}
	}
	return err
}

// wakeRoomLocked wakes, in order, as many writers waiting for room as the
// send buffer now has room for, counting a full frame for each.
func (s *Session) wakeRoomLocked() {
	room := sendBufferLimit - len(s.wbuf)
	for len(s.roomWaiters) > 0 && room > 0 {
		st := s.roomWaiters[0]
		s.roomWaiters[0] = nil
		s.roomWaiters = s.roomWaiters[1:]
		room -= int(s.peer.maxFrameSize)
		st.mu.Lock()
		st.roomGranted = true
		if st.writeWake != nil {
			signal(st.writeWake)
		}
		st.mu.Unlock()
	}
	if len(s.roomWaiters) == 0 {
		s.roomWaiters = nil
	}
}

// send queues the frame b, a control frame.
func (s *Session) send(b []byte) error {
	s.wmu.Lock()
	if err := s.sendErrLocked(); err != nil {
		s.wmu.Unlock()
		return err
	}
	s.wbuf = append(s.wbuf, b...)
	s.flushControlAndUnlock()
	return nil
}

// sendControl queues a control frame with a payload of 32-bit words.
func (s *Session) sendControl(h frameHeader, payload ...uint32) {
	s.wmu.Lock()
	if s.sendErrLocked() != nil {
		s.wmu.Unlock()
		return
	}
	s.wbuf = appendFrameHeader(s.wbuf, h)
	for _, v := range payload {
		s.wbuf = binary.BigEndian.AppendUint32(s.wbuf, v)
	}
	s.flushControlAndUnlock()
}

// flushControlAndUnlock flushes after a control frame was queued and
// releases wmu. Control frames do not wait for room, so that closing a
// stream and answering the peer never block; if they pile up far beyond
// the room that data has, the peer has stopped reading, and the session
// ends.
func (s *Session) flushControlAndUnlock() {
	var err error
	if len(s.wbuf) > controlBufferLimit {
		err = fmt.Errorf("%w: peer does not read (%d bytes pending)", ErrProtocol, len(s.wbuf))
	} else {
		err = s.flushLocked()
	}
	s.wmu.Unlock()
	if err != nil {
		s.fail(err)
	}
}

func (s *Session) sendPing(seq uint64, ack bool) {
	var flags uint8
	if ack {
		flags = flagAck
	}
	s.sendControl(frameHeader{length: 8, typ: framePing, flags: flags}, uint32(seq>>32), uint32(seq))
}

// register gives an outgoing stream its id and enters it in the table.
// Giving out the last id starts the session's graceful end: no stream can
// be opened on it any more.
func (s *Session) register(st *Stream) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return 0, refusedBy(s.err)
	case s.goAwayRecv != nil:
		return 0, refusedBy(s.goAwayRecv)
	case s.nextID > maxStreamID:
		return 0, ErrStreamIDsExhausted
	}
	id := s.nextID
	s.nextID += 2
	st.id.Store(id)
	s.streams[id] = st
	if s.nextID > maxStreamID {
		go s.stopWithIDsExhausted()
	}
	return id, nil
}

// sendErrLocked says why nothing more can be sent, or nil.
func (s *Session) sendErrLocked() error {
	if err := s.Err(); err != nil {
		return err
	}
	if s.writeErr != nil {
		return fmt.Errorf("mux: writing to the connection: %w", s.writeErr)
	}
	return nil
}

// flushLocked makes sure the send buffer gets written. If no flush runs,
// the caller tries to write it at once without blocking; what the kernel
// does not take, or all of it on a connection that cannot be written to
// so, goes to writeLoop, and so does the work of a caller that keeps
// finding new frames after a few rounds. It returns the connection's
// error, for the caller to fail the session with once it has released wmu.
func (s *Session) flushLocked() error {
	if s.flusher != flushNone || len(s.wbuf) == 0 || s.writeErr != nil {
		return nil
	}
	s.flusher = flushInline
	for round := 0; len(s.wbuf) > 0; round++ {
		if round == 4 {
			s.handOffLocked(nil)
			return nil
		}
		buf := s.takeBufLocked()
		s.wmu.Unlock()
		n, ok, err := s.sock.tryWrite(buf)
		s.wmu.Lock()
		switch {
		case err != nil:
			s.writeErr = err
			s.idleLocked()
			return err
		case !ok || n < len(buf):
			s.handOffLocked(buf[n:])
			return nil
		}
		s.recycleLocked(buf)
	}
	s.idleLocked()
	return nil
}

// handOffLocked gives the flush to writeLoop, with rest, the unwritten end
// of the batch in flight, to write before the buffer.
func (s *Session) handOffLocked(rest []byte) {
	s.flusher = flushLoop
	if len(rest) > 0 {
		s.rest = rest
	}
	signal(s.kick)
}

// takeBufLocked takes the send buffer for writing and makes room for the
// writers waiting for it.
func (s *Session) takeBufLocked() []byte {
	buf := s.wbuf
	s.wbuf, s.wspare = s.wspare[:0], nil
	t := now()
	s.progressAt.Store(t)
	s.sentAt.Store(t)
	s.wakeRoomLocked()
	return buf
}

// recycleLocked keeps a written buffer for the next batch, unless it grew
// too large to keep.
func (s *Session) recycleLocked(buf []byte) {
	if cap(buf) <= 4*sendBufferLimit {
		s.wspare = buf[:0]
	}
}

// idleLocked ends a flush, waking whoever waits for the send path to
// drain.
func (s *Session) idleLocked() {
	s.flusher = flushNone
	s.progressAt.Store(0)
	s.wakeRoomLocked()
	if s.sent != nil && (len(s.wbuf) == 0 || s.writeErr != nil) {
		close(s.sent)
		s.sent = nil
	}
}

// writeLoop writes what senders hand it: everything a sender could not
// write at once without blocking.
func (s *Session) writeLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		s.wmu.Lock()
		if s.flusher == flushNone && len(s.wbuf) > 0 && s.writeErr == nil {
			s.flusher = flushLoop
		}
		if s.flusher != flushLoop {
			s.wmu.Unlock()
			continue
		}
		var err error
		for err == nil {
			var buf []byte
			switch {
			case s.rest != nil:
				buf, s.rest = s.rest, nil
			case len(s.wbuf) > 0:
				buf = s.takeBufLocked()
			}
			if buf == nil {
				break
			}
			s.wmu.Unlock()
			err = s.sock.write(buf)
			s.wmu.Lock()
			if err != nil {
				s.writeErr = err
			} else {
				s.recycleLocked(buf)
			}
		}
		s.idleLocked()
		s.wmu.Unlock()
		if err != nil {
			s.fail(fmt.Errorf("mux: writing to the connection: %w", err))
		}
	}
}

// progressed notes that bytes left for the peer, for keepalive; drained
// says they left because the peer read what was waiting before them.
func (s *Session) progressed(drained bool) {
	t := now()
	s.progressAt.Store(t)
	if drained {
		s.drainedAt.Store(t)
	}
}

// waitSent waits until everything queued so far has been written, writing
// failed, the session ended, timeout fires or stop is closed; either may
// be nil.
func (s *Session) waitSent(timeout <-chan time.Time, stop <-chan struct{}) {
	s.wmu.Lock()
	if s.writeErr != nil || len(s.wbuf) == 0 && s.rest == nil && s.flusher == flushNone {
		s.wmu.Unlock()
		return
	}
	if s.sent == nil {
		s.sent = make(chan struct{})
	}
	sent := s.sent
	s.wmu.Unlock()
	select {
	case <-sent:
	case <-s.done:
	case <-timeout:
	case <-stop:
	}
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}
