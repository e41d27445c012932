package mux

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"
)

// The send path. Every frame is appended to one shared buffer, the open
// batch, and one flusher at a time takes the batch and writes it out in one
// write. A sender that finds no flush running first tries to write the
// batch itself, without blocking (see socket.go), so a lone caller waits
// for no goroutine hop, and under load the frames of many callers leave in
// one syscall. What the kernel does not take at once, and everything on a
// connection that cannot be written without blocking, is written by
// writeLoop; so is the data of a stream that writes again without reading
// in between (a streaming sender), so that its messages gather into
// batches while the previous batch is being written. No sender, and never
// the reader goroutine, waits on a congested connection: senders of data
// wait only for their turn in a batch, and that wait ends with the
// stream's deadline, Close, Reset, or the end of the session.
//
// Scheduling. While a flush runs, a batch holds at most sendQuantum bytes
// of each stream's data and sendBufferLimit bytes of data in all. A writer
// past its stream's share, or finding the batch full, waits for a turn in
// a later batch. Turns go to the highest priority waiting (see
// Stream.SetPriority), in order of arrival among equals, so streams of
// equal priority take turns one share each, and a small frame waits behind
// at most one share of every other stream, never behind a large write.
// A writer also waits while a stream of higher priority waits, so higher
// priorities go first. Control frames never wait: WINDOW_UPDATE, which no
// other frame needs to precede, goes in a lane of its own that is written
// before the open batch, so that the peer's credit never waits behind
// this side's data; the other control frames join the open batch, in the
// order they answer the peer (a PING's ACK follows the answers to what
// came before the PING).
//
// Locks: wmu may be held while taking a stream's mu or the session's mu,
// never the other way around; the session's error is recorded by fail,
// which is never called with wmu held.

// sendQuantum is how much of one stream's data a batch holds while other
// streams may be waiting: four frames of the default MaxFrameSize, enough
// to keep a lone stream's frames flowing while a batch is being written.
const sendQuantum = 4 * defaultMaxFrameSize

// flusher says who writes the send buffer now.
type flusher uint8

const (
	flushNone   flusher = iota // nobody: the buffer is empty, or about to be flushed by the sender that filled it
	flushInline                // a sender, without blocking
	flushLoop                  // writeLoop
)

// queueData queues one DATA frame of st, ending st's direction when end
// is set. It gives st its id when this is the stream's first frame, so ids
// reach the wire in increasing order. Unless the frame is empty, it waits
// for a turn while the open batch may not take it (see mayAppendLocked).
func (s *Session) queueData(st *Stream, p []byte, end bool) error {
	s.wmu.Lock()
	if len(p) > 0 && !s.mayAppendLocked(st, len(p)) {
		if err := s.waitTurnLocked(st); err != nil {
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
		s.takeBufsLocked()
		h.streamID = id
		st.opened.Store(true) // from here on the peer may process it
		h.flags |= flagOpen
		h.length += uint32(uvarintLen(uint64(st.typ)))
		s.wbuf = appendFrameHeader(s.wbuf, h)
		s.wbuf = binary.AppendUvarint(s.wbuf, uint64(st.typ))
	} else {
		s.takeBufsLocked()
		s.wbuf = appendFrameHeader(s.wbuf, h)
	}
	s.wbuf = append(s.wbuf, p...)
	if st.batch != s.batch {
		st.batch, st.batchBytes = s.batch, 0
	}
	st.batchBytes += int32(len(p))
	streaming := st.streaming.Swap(true) // it wrote last time too: more will follow
	var a afterEnd
	if end {
		st.queuedEnd = true
		st.mu.Lock()
		a = st.endLocked(change{send: halfEnded, sendErr: ErrWriteClosed, by: byApp})
		st.mu.Unlock()
		a.forgetNow() // now that the END is queued, before it can leave: see Session.forget
	}
	var err error
	if streaming && s.flusher == flushNone && s.writeErr == nil {
		s.handOffLocked(nil) // writeLoop writes it while the sender makes the next
	} else {
		err = s.flushLocked()
	}
	s.wmu.Unlock()
	a.do()
	if err != nil {
		s.writeFailed(err)
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
	s.takeBufsLocked()
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

// mayAppendLocked says whether st may append a data frame of n bytes to
// the open batch now: nobody is flushing, so the batch leaves at once; or
// the batch has room for it, st has not used its share of the batch, and
// no stream of higher priority waits for a turn.
func (s *Session) mayAppendLocked(st *Stream, n int) bool {
	if s.flusher == flushNone || s.writeErr != nil {
		return true
	}
	if len(s.wbuf)+n > sendBufferLimit && len(s.wbuf) > 0 {
		return false
	}
	if st.batch == s.batch && int(st.batchBytes)+n > sendQuantum {
		return false
	}
	return len(s.turnWaiters) == 0 || s.turnWaiters[0].priority <= st.priority
}

// waitTurnLocked waits, with wmu released meanwhile, until a flusher gives
// st a turn to append a frame to the open batch, or st can
// write no more. Waiters are kept in order of priority, then of arrival,
// and served so (see grantTurnsLocked).
func (s *Session) waitTurnLocked(st *Stream) error {
	st.mu.Lock()
	st.turnGranted = false // before a flusher can find st in the queue
	st.mu.Unlock()
	i := len(s.turnWaiters)
	for i > 0 && s.turnWaiters[i-1].priority < st.priority {
		i--
	}
	s.turnWaiters = slices.Insert(s.turnWaiters, i, st)
	s.wmu.Unlock()
	st.mu.Lock()
	var err error
	for !st.turnGranted {
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
		if i := slices.Index(s.turnWaiters, st); i >= 0 {
			s.turnWaiters = slices.Delete(s.turnWaiters, i, i+1)
		} else {
			s.grantTurnsLocked() // st was given a turn it will not take: pass it on
		}
	}
	return err
}

// grantTurnsLocked gives turns in the open batch to the writers waiting
// for one, as many as the batch has room for, counting a full frame for
// each: those of the highest
// priority waiting, in order of arrival. Waiters of lower priority wait
// until no higher one does.
func (s *Session) grantTurnsLocked() {
	room := sendBufferLimit - len(s.wbuf)
	for len(s.turnWaiters) > 0 && room > 0 {
		st := s.turnWaiters[0]
		s.turnWaiters[0] = nil
		s.turnWaiters = s.turnWaiters[1:]
		room -= int(s.peer.maxFrameSize)
		st.mu.Lock()
		st.turnGranted = true
		if st.writeWake != nil {
			signal(st.writeWake)
		}
		st.mu.Unlock()
		if len(s.turnWaiters) > 0 && s.turnWaiters[0].priority < st.priority {
			break // the rest wait until no writer of st's priority does
		}
	}
	if len(s.turnWaiters) == 0 {
		s.turnWaiters = nil
	}
}

// send queues the frame b, a control frame.
func (s *Session) send(b []byte) error {
	s.wmu.Lock()
	if err := s.sendErrLocked(); err != nil {
		s.wmu.Unlock()
		return err
	}
	s.takeBufsLocked()
	s.wbuf = append(s.wbuf, b...)
	s.flushControlAndUnlock()
	return nil
}

// sendControl queues a control frame with a payload of 32-bit words. A
// WINDOW_UPDATE goes in the lane ahead of the open batch, since nothing
// queued before it needs to precede it; the other frames join the batch,
// in order.
func (s *Session) sendControl(h frameHeader, payload ...uint32) {
	s.wmu.Lock()
	if s.sendErrLocked() != nil {
		s.wmu.Unlock()
		return
	}
	s.takeBufsLocked()
	buf := &s.wbuf
	if h.typ == frameWindowUpdate {
		buf = &s.lane
	}
	*buf = appendFrameHeader(*buf, h)
	for _, v := range payload {
		*buf = binary.BigEndian.AppendUint32(*buf, v)
	}
	s.flushControlAndUnlock()
}

// flushControlAndUnlock flushes after a control frame was queued and
// releases wmu. Control frames do not wait for room, so that closing a
// stream and answering the peer never block; if they pile up far beyond
// the room that data has, the peer has stopped reading, and the session
// ends.
func (s *Session) flushControlAndUnlock() {
	if pending := len(s.wbuf) + len(s.lane); pending > controlBufferLimit {
		s.wmu.Unlock()
		s.fail(fmt.Errorf("%w: peer does not read (%d bytes pending)", ErrProtocol, pending))
		return
	}
	err := s.flushLocked()
	s.wmu.Unlock()
	if err != nil {
		s.writeFailed(err)
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
		s.stopOpensLocked()
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
	if s.flusher != flushNone || s.writeErr != nil {
		return nil
	}
	if s.nothingQueuedLocked() {
		s.releaseBufsLocked() // a caller took them and queued nothing
		return nil
	}
	s.flusher = flushInline
	for round := 0; !s.nothingQueuedLocked(); round++ {
		if round == 4 {
			s.handOffLocked(nil)
			return nil
		}
		buf, lane := s.takeBufLocked()
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
		s.recycleLocked(buf, lane)
	}
	s.idleLocked()
	return nil
}

// nothingQueuedLocked says whether the lane and the open batch are empty.
func (s *Session) nothingQueuedLocked() bool { return len(s.lane) == 0 && len(s.wbuf) == 0 }

// handOffLocked gives the flush to writeLoop, with rest, the unwritten end
// of the batch in flight, to write before the buffer.
func (s *Session) handOffLocked(rest []byte) {
	s.flusher = flushLoop
	if len(rest) > 0 {
		s.rest = rest
	}
	signal(s.kick)
}

// takeBufLocked takes what is queued next for writing: the lane if it
// holds frames, else the open batch, whose place it gives to a new batch,
// granting the turns waiting for one. lane says which it took.
func (s *Session) takeBufLocked() (buf []byte, lane bool) {
	t := now()
	s.progressAt.Store(t)
	s.sentAt.Store(t)
	if len(s.lane) > 0 {
		buf = s.lane
		s.lane, s.laneSpare = s.laneSpare[:0], nil
		return buf, true
	}
	buf = s.wbuf
	s.wbuf, s.wspare = s.wspare[:0], nil
	s.batch++
	s.grantTurnsLocked()
	return buf, false
}

// recycleLocked keeps a written buffer for the next batch or lane,
// unless it grew too large to keep.
func (s *Session) recycleLocked(buf []byte, lane bool) {
	switch {
	case cap(buf) > 4*sendBufferLimit:
	case lane:
		s.laneSpare = buf[:0]
	default:
		s.wspare = buf[:0]
	}
}

// idleLocked ends a flush, waking whoever waits for the send path to
// drain, and giving back the buffers once it has.
func (s *Session) idleLocked() {
	s.flusher = flushNone
	s.progressAt.Store(0)
	s.grantTurnsLocked()
	if s.sent != nil && (s.nothingQueuedLocked() || s.writeErr != nil) {
		close(s.sent)
		s.sent = nil
	}
	if s.nothingQueuedLocked() {
		s.releaseBufsLocked()
	}
}

// sendBufs holds the send path's buffers, the open batch's and the lane's
// and their spares, while the send path is idle: they wait in sendBufPool,
// not in the session, so that an idle session holds no buffer, and the
// next session to send takes them, capacity and all, as x/net/http2's
// bufferedWriter takes its bufio.Writer. The session keeps the holder it
// took them with, s.bufs, while it holds them: giving them back and
// taking them again allocates nothing.
type sendBufs struct{ wbuf, wspare, lane, laneSpare []byte }

var sendBufPool = sync.Pool{New: func() any { return new(sendBufs) }}

// takeBufsLocked gives the send path buffers to append frames to, unless
// it holds them already.
func (s *Session) takeBufsLocked() {
	if s.bufs != nil {
		return
	}
	b := sendBufPool.Get().(*sendBufs)
	s.wbuf, s.wspare, s.lane, s.laneSpare = b.wbuf, b.wspare, b.lane, b.laneSpare
	*b = sendBufs{}
	s.bufs = b
}

// releaseBufsLocked gives the buffers back, once a flush has emptied
// them. The array with room goes where frames are appended first.
func (s *Session) releaseBufsLocked() {
	b := s.bufs
	if b == nil {
		return
	}
	if cap(s.wbuf) == 0 {
		s.wbuf, s.wspare = s.wspare, nil
	}
	if cap(s.lane) == 0 {
		s.lane, s.laneSpare = s.laneSpare, nil
	}
	*b = sendBufs{s.wbuf[:0], s.wspare, s.lane[:0], s.laneSpare}
	s.wbuf, s.wspare, s.lane, s.laneSpare, s.bufs = nil, nil, nil, nil, nil
	sendBufPool.Put(b)
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
		if s.flusher == flushNone && !s.nothingQueuedLocked() && s.writeErr == nil {
			s.flusher = flushLoop
		}
		if s.flusher != flushLoop {
			s.wmu.Unlock()
			continue
		}
		var err error
		for err == nil {
			var buf []byte
			lane := false
			switch {
			case s.rest != nil:
				buf, s.rest = s.rest, nil
			case !s.nothingQueuedLocked():
				buf, lane = s.takeBufLocked()
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
				s.recycleLocked(buf, lane) // a batch's unwritten end is a buffer still
			}
		}
		s.idleLocked()
		s.wmu.Unlock()
		if err != nil {
			s.writeFailed(err)
		}
	}
}

// writeFailed ends the session after a write to the connection failed
// with err (the error is recorded in writeErr, so nothing more is
// written), but not before the reader has read what the peer sent before
// the connection ended, or readAfterWriteFailure has passed. A write
// fails when the peer has closed the connection, a graceful close of the
// peer's among others; what the peer sent before it closed may still
// wait unread in the kernel (on Linux even after the peer's TCP reset,
// which fails the write with ECONNRESET, then EPIPE): the answers of
// streams the peer finished, and above all its GOAWAY, whose
// Last-Stream-ID proves that this side's later streams were never
// processed. Ended at once, the session would fail those streams as
// maybe processed, and the finished ones as cut off; read to the end, it
// gives the former their refusal (ErrRefused) and the latter their
// answers. The reader's end of input then ends the session with the
// write's error (see connError).
func (s *Session) writeFailed(err error) {
	err = fmt.Errorf("mux: writing to the connection: %w", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.writeFail != nil {
		return
	}
	s.writeFail = time.AfterFunc(readAfterWriteFailure, func() { s.fail(err) })
	s.stopOpensLocked() // a stream opened now could never be sent: say so before the end
}

// readAfterWriteFailure bounds how long a session whose write failed
// reads on before it ends: what a closed connection still holds is read in
// an instant, and a peer that neither reads nor closes gets no longer.
const readAfterWriteFailure = lingerTimeout

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
	if s.writeErr != nil || s.nothingQueuedLocked() && s.rest == nil && s.flusher == flushNone {
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
