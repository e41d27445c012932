package mux

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The send path. Every frame is appended to one shared buffer; whoever
// finds no flush running writes the buffer out, in its own goroutine, so a
// lone caller waits for no timer and no goroutine hop, and under load the
// frames of many callers leave in one syscall. The reader goroutine never
// writes to the connection itself: it hands its frames to writeLoop, so a
// peer that stops reading can never stop this side from reading.

// send appends the frame b and flushes, inline when inline is set.
func (s *Session) send(b []byte, inline bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.sendErrLocked(); err != nil {
		return err
	}
	s.wbuf = append(s.wbuf, b...)
	s.flushLocked(inline)
	return nil
}

// sendControl sends a frame with a payload of 32-bit words. Unless inline
// is set the flush is left to writeLoop: the reader goroutine sends this
// way, and fails the session when the peer lets such frames pile up by not
// reading.
func (s *Session) sendControl(h frameHeader, inline bool, payload ...uint32) {
	s.sendControlThen(h, inline, nil, payload...)
}

// sendControlThen is sendControl that runs queued, if not nil, once the
// frame is in the send buffer and before it can reach the peer.
func (s *Session) sendControlThen(h frameHeader, inline bool, queued func(), payload ...uint32) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.sendErrLocked() != nil {
		return
	}
	if !inline && len(s.wbuf) > controlBufferLimit {
		s.fail(fmt.Errorf("%w: peer does not read its answers (%d bytes pending)", ErrProtocol, len(s.wbuf)))
		return
	}
	s.wbuf = appendFrameHeader(s.wbuf, h)
	for _, v := range payload {
		s.wbuf = binary.BigEndian.AppendUint32(s.wbuf, v)
	}
	if queued != nil {
		queued()
	}
	s.flushLocked(inline)
}

func (s *Session) sendPing(seq uint64, ack, inline bool) {
	var flags uint8
	if ack {
		flags = flagAck
	}
	s.sendControl(frameHeader{length: 8, typ: framePing, flags: flags}, inline, uint32(seq>>32), uint32(seq))
}

// sendData sends one DATA frame of st. It gives st its id when this is the
// stream's first frame, so ids reach the wire in increasing order.
func (s *Session) sendData(st *Stream, p []byte, end bool) error {
	return s.sendDataThen(st, p, end, nil)
}

// sendDataThen is sendData that runs queued, if not nil, once the frame is
// in the send buffer and before it can reach the peer. A stream's last
// frame forgets the stream this way: the peer frees its slot for the
// stream when it reads that frame, and must not find this side still
// counting the stream when it opens the next one.
func (s *Session) sendDataThen(st *Stream, p []byte, end bool, queued func()) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for len(s.wbuf) >= sendBufferLimit && s.flushing && !s.wfailed {
		s.wwaiters++
		s.wroom.Wait()
		s.wwaiters--
	}
	if err := s.sendErrLocked(); err != nil {
		if st.id.Load() == 0 {
			return refusedBy(err)
		}
		return err
	}
	h := frameHeader{length: uint32(len(p)), typ: frameData, streamID: st.id.Load()}
	if end {
		h.flags |= flagEnd
	}
	if h.streamID == 0 {
		id, err := s.register(st)
		if err != nil {
			return err
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
	if queued != nil {
		queued()
	}
	s.flushLocked(true)
	return nil
}

// register gives an outgoing stream its id and enters it in the table.
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
	return id, nil
}

// sendErrLocked says why nothing more can be sent, or nil.
func (s *Session) sendErrLocked() error {
	if err := s.Err(); err != nil {
		return err
	}
	if s.wfailed {
		return ErrSessionClosed
	}
	return nil
}

// waitFlushed waits until everything queued so far has been written, or
// writing failed.
func (s *Session) waitFlushed() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for len(s.wbuf) > 0 || s.flushing {
		if s.wfailed {
			return
		}
		if !s.flushing {
			s.flushLocked(true)
			continue
		}
		s.wwaiters++
		s.wroom.Wait()
		s.wwaiters--
	}
}

// flushLocked makes sure wbuf gets written: at once by the caller when
// inline is set and no flush runs, otherwise by the running flusher or by
// writeLoop. An inline flusher that keeps finding new frames hands the work
// to writeLoop after a few rounds, so no caller is kept writing for others.
func (s *Session) flushLocked(inline bool) {
	if s.flushing {
		return
	}
	if !inline {
		signal(s.kick)
		return
	}
	s.flushing = true
	for round := 0; len(s.wbuf) > 0 && !s.wfailed; round++ {
		if round == 4 {
			signal(s.kick)
			break
		}
		s.writeOutLocked()
	}
	s.doneFlushingLocked()
}

// doneFlushingLocked ends a flush, waking whoever waits for one to end.
func (s *Session) doneFlushingLocked() {
	s.flushing = false
	if s.wwaiters > 0 {
		s.wroom.Broadcast()
	}
}

// writeOutLocked writes wbuf to the connection, releasing wmu meanwhile so
// that others can append.
func (s *Session) writeOutLocked() {
	buf := s.wbuf
	s.wbuf = s.wspare[:0]
	s.flushedAt.Store(time.Now().UnixNano())
	s.wmu.Unlock()
	_, err := s.conn.Write(buf)
	s.flushedAt.Store(0)
	s.wmu.Lock()
	if cap(buf) <= 4*sendBufferLimit {
		s.wspare = buf[:0]
	}
	if s.wwaiters > 0 {
		s.wroom.Broadcast()
	}
	if err != nil && !s.wfailed {
		s.wfailed = true
		s.fail(fmt.Errorf("mux: writing to the connection: %w", err))
	}
}

// writeLoop flushes what the reader goroutine and overloaded flushers
// leave behind.
func (s *Session) writeLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		s.wmu.Lock()
		if !s.flushing {
			s.flushing = true
			for len(s.wbuf) > 0 && !s.wfailed {
				s.writeOutLocked()
			}
			s.doneFlushingLocked()
		}
		s.wmu.Unlock()
	}
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}
