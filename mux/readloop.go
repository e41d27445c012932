package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"sync/atomic"
	"time"
)

// The receive path: one goroutine reads frames from a buffered reader and
// dispatches them. It never writes to the connection (see writer.go) and
// never waits for the application: data goes into the stream's buffer,
// which flow control bounds, and new streams into the pending list, which
// the stream limit bounds.

// readLoop is the body of the goroutines that read sessions. One reads a
// session at a time, counted in its s.wg. When a new stream of a handled
// type arrives with nothing read after it, the reader does not start a
// goroutine for the handler and then wait for the next frame: it hands the
// reading over to a spare goroutine (a new one if none waits), runs the
// handler itself at once, and then becomes a spare, for whichever session
// hands its reading over next. Recycled so, the goroutines keep the stacks
// that reading and writing grew. The spares are the process's, not a
// session's, and do not outlast their use (see waitAsSpare): an idle
// session costs one goroutine to read it, the one waiting for its bytes.
func (s *Session) readLoop() {
	var spareTimer *time.Timer // this goroutine's, for its waits as a spare
	for s != nil {
		st, err := s.readFrames()
		if err != nil {
			s.br.release() // nothing reads it any more
			s.fail(err)
			s.wg.Done()
			return
		}
		handle := st.handle
		st.handle = nil
		select {
		case spareReaders <- s: // a spare reads on
		default:
			go s.readLoop()
		}
		s.serve(st, handle)
		s = s.waitAsSpare(&spareTimer)
	}
}

// spareReaders hands a session's reading to a spare goroutine, one that
// waits in waitAsSpare.
var spareReaders = make(chan *Session)

// maxSpareReaders bounds the spare goroutines of the process, spares
// counts them. With one spare per session, calls one after another
// started a goroutine every other call: the caller's next call often
// arrives before the goroutine that served the last one, its answer
// written, has come back to wait. Two per session left one waiting then
// too (a goroutine per 30 calls, measured); more did not help under load.
// Shared by all sessions, a few per processor serve as well.
var (
	maxSpareReaders = int32(max(4, 2*runtime.GOMAXPROCS(0)))
	spares          atomic.Int32
)

// spareIdle is how long a spare waits for a session to read before it
// exits: far longer than a caller takes to make its next call, and short
// enough that a session which went idle leaves no goroutine behind for
// long.
const spareIdle = 100 * time.Millisecond

// waitAsSpare waits, after this goroutine ran a handler of s's, for a
// session whose reading it is handed, and returns that session; or nil,
// for the goroutine to exit, when enough spares wait already, when none
// came within spareIdle, or when s ended. *t is the goroutine's timer for
// the wait, made on its first.
func (s *Session) waitAsSpare(t **time.Timer) *Session {
	if spares.Add(1) > maxSpareReaders {
		spares.Add(-1)
		return nil
	}
	defer spares.Add(-1)
	if *t == nil {
		*t = time.NewTimer(spareIdle)
	} else {
		(*t).Reset(spareIdle)
	}
	select {
	case next := <-spareReaders:
		return next
	case <-(*t).C:
		return nil
	case <-s.done:
		return nil
	}
}

// readFrames reads and dispatches frames until the connection fails, or
// until a new stream of a handled type arrives with nothing read after it.
func (s *Session) readFrames() (*Stream, error) {
	maxPayload := uint32(s.cfg.MaxFrameSize)
	for {
		hb, err := s.br.Peek(frameHeaderLen)
		if err != nil {
			return nil, s.connError(err, len(hb))
		}
		h, err := parseFrameHeader(hb, maxPayload)
		if err != nil {
			return nil, s.protocolError(err)
		}
		s.br.Discard(frameHeaderLen)
		switch h.typ {
		case frameData:
			err = s.onData(h)
		case frameReset, frameWindowUpdate:
			err = s.onStreamControl(h)
		case framePing:
			err = s.onPing(h)
		case frameGoAway:
			err = s.onGoAway(h)
		case frameSettings:
			err = s.protocolError(fmt.Errorf("%w: SETTINGS after the handshake", errFrame))
		}
		if err != nil {
			return nil, err
		}
		if st := s.serveNow; st != nil {
			s.serveNow = nil
			return st, nil
		}
	}
}

// connError turns a read error into the session's error. partial is how
// many bytes of an unfinished frame had arrived. The end of input after a
// write failed is that write's failure: a peer's reset is reported once,
// to whichever of the reader and the writer asks first, and the other
// then reads an end of input (or, writing, EPIPE); and a session whose
// write failed reads on to the end of input before it ends (see
// writeFailed). A read's own error (the reset, when the reader met it
// first) is the session's.
func (s *Session) connError(err error, partial int) error {
	eof := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	if eof || errors.Is(err, net.ErrClosed) {
		if werr := s.writeFailure(); werr != nil {
			return fmt.Errorf("mux: writing to the connection: %w", werr)
		}
	}
	if eof {
		if partial > 0 {
			return fmt.Errorf("%w: connection closed in the middle of a frame: %w", ErrProtocol, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("mux: connection closed by peer: %w", io.EOF)
	}
	return fmt.Errorf("mux: reading from the connection: %w", err)
}

// protocolError tells the peer why the session ends, waiting at most a
// second for the GoAway to leave, and returns the session's error. Even
// after an earlier GoAway this one is sent, with no higher Last-Stream-ID,
// since it says why the session ends.
func (s *Session) protocolError(cause error) error {
	err := fmt.Errorf("%w: %w", ErrProtocol, cause)
	debug := []byte(cause.Error())
	if limit := s.goAwayDebugLimit(); len(debug) > limit {
		debug = debug[:limit]
	}
	s.mu.Lock()
	if s.protoErr == nil {
		s.protoErr = err // the GOAWAY's write may fail the session first
	}
	g := s.newGoAwayLocked(GoAwayProtocolError, debug)
	if s.goAwaySent == nil {
		s.goAwaySent = g
	}
	s.mu.Unlock()
	if s.send(appendGoAway(nil, g)) == nil {
		t := time.NewTimer(protocolErrorWait)
		s.waitSent(t.C, nil)
		t.Stop()
	}
	return err
}

// protocolErrorWait bounds how long a protocol error waits for its GoAway
// to leave.
const protocolErrorWait = time.Second

// payload returns the next n bytes of the connection, which must fit the
// reader's buffer (control frames only).
func (s *Session) payload(n int) ([]byte, error) {
	p, err := s.br.Peek(n)
	if err != nil {
		return nil, s.connError(err, 1)
	}
	s.br.Discard(n)
	return p, nil
}

func (s *Session) isPeerID(id uint32) bool { return id%2 == 0 == s.client }

func (s *Session) onData(h frameHeader) error {
	n := int(h.length)
	var st *Stream
	if h.flags&flagOpen != 0 {
		p, err := s.br.Peek(min(n, binary.MaxVarintLen32))
		if err != nil && len(p) < n {
			return s.connError(err, 1)
		}
		t, k := binary.Uvarint(p)
		if k <= 0 || t > math.MaxUint32 {
			return s.protocolError(fmt.Errorf("%w: bad stream type in the opening frame of stream %d", errFrame, h.streamID))
		}
		s.br.Discard(k)
		n -= k
		if st, err = s.openIncoming(h.streamID, StreamType(t)); err != nil {
			return err
		}
	} else {
		var err error
		if st, err = s.lookup(h); err != nil {
			return err
		}
	}
	if st == nil { // refused, or already closed
		if _, err := s.br.Discard(n); err != nil {
			return s.connError(err, 1)
		}
		return nil
	}
	if err := st.deliver(s.br, n, h.flags&flagEnd != 0); err != nil {
		return s.connError(err, 1)
	}
	if st.handle != nil { // a new stream of a handled type, its data in
		if s.br.Buffered() == 0 {
			s.serveNow = st // by this goroutine: see readLoop
		} else {
			go s.serve(st, st.handle)
			st.handle = nil
		}
	}
	return nil
}

// openIncoming admits a stream the peer opens, or refuses it: after this
// side's GoAway or Close, or over MaxIncomingStreams. It returns nil for a
// refused stream, and for one whose opening frame the reader parses after
// the session ended.
func (s *Session) openIncoming(id uint32, t StreamType) (*Stream, error) {
	s.mu.Lock()
	if !s.isPeerID(id) || id <= s.lastPeerID {
		last := s.lastPeerID
		s.mu.Unlock()
		return nil, s.protocolError(fmt.Errorf("%w: stream %d opened out of order (last peer stream %d)", errFrame, id, last))
	}
	s.lastPeerID = id
	if s.err != nil {
		// The session ended after this frame was read: its end has passed
		// the stream table, so a stream added now would never end.
		s.mu.Unlock()
		return nil, nil
	}
	if s.goAwaySent != nil || s.closing || s.refuseLocked() {
		s.mu.Unlock()
		s.sendControl(frameHeader{length: 4, typ: frameReset, streamID: id}, ResetRefused)
		return nil, nil
	}
	st := newStream(s, id, t)
	s.streams[id] = st
	s.chargeLocked(st)
	st.handle = s.admitLocked(st)
	s.mu.Unlock()
	return st, nil
}

// lookup finds the stream a frame is for. It returns nil for a stream that
// has ended, whose late frames are ignored, and an error for one that never
// existed.
func (s *Session) lookup(h frameHeader) (*Stream, error) {
	s.mu.Lock()
	st := s.streams[h.streamID]
	never := st == nil && (s.isPeerID(h.streamID) && h.streamID > s.lastPeerID ||
		!s.isPeerID(h.streamID) && h.streamID >= s.nextID)
	s.mu.Unlock()
	if never {
		return nil, s.protocolError(fmt.Errorf("%w: %s for stream %d, which was never opened", errFrame, h.typ, h.streamID))
	}
	return st, nil
}

func (s *Session) onStreamControl(h frameHeader) error {
	p, err := s.payload(4)
	if err != nil {
		return err
	}
	v := binary.BigEndian.Uint32(p)
	st, err := s.lookup(h)
	if err != nil || st == nil { // never opened, or forgotten: late frames are ignored
		return err
	}
	if h.typ == frameReset {
		st.failBy(&ResetError{Code: v, Remote: true})
		return nil
	}
	if v == 0 || v > maxWindow {
		return s.protocolError(fmt.Errorf("%w: window increment %d on stream %d", errFrame, v, h.streamID))
	}
	if !st.addCredit(int(v)) {
		st.resetLocally(ResetFlowControl)
	}
	return nil
}

func (s *Session) onPing(h frameHeader) error {
	p, err := s.payload(8)
	if err != nil {
		return err
	}
	seq := binary.BigEndian.Uint64(p)
	if h.flags&flagAck == 0 {
		s.sendPing(seq, true)
		return nil
	}
	if seq == 0 { // keepalive's
		if at := s.keepAliveAt.Swap(0); at != 0 {
			s.lastRTT.Store(now() - at)
		}
		return nil
	}
	s.mu.Lock()
	if answered := s.pings[seq]; answered != nil {
		close(answered)
		delete(s.pings, seq)
	}
	s.mu.Unlock()
	return nil
}

// onGoAway records the peer's GoAway and fails, as never processed, the
// streams this side opened that the peer did not take. The lowest
// Last-Stream-ID applies; the latest code and debug data say why the
// session ends. Only streams that a lower Last-Stream-ID newly excludes
// are looked at, so a flood of GOAWAYs costs no walk of the stream table
// each.
func (s *Session) onGoAway(h frameHeader) error {
	p, err := s.payload(int(h.length))
	if err != nil {
		return err
	}
	g := &GoAwayError{
		LastStreamID: binary.BigEndian.Uint32(p),
		Code:         binary.BigEndian.Uint32(p[4:]),
		Debug:        append([]byte(nil), p[8:]...),
		Remote:       true,
	}
	s.mu.Lock()
	excludedAbove := s.nextID // this side's ids below it have all been given out
	if prev := s.goAwayRecv; prev != nil {
		excludedAbove = min(excludedAbove, prev.LastStreamID)
		g.LastStreamID = min(g.LastStreamID, prev.LastStreamID)
	}
	s.goAwayRecv = g
	s.stopOpensLocked()
	excluded := s.ownStreamsBetweenLocked(g.LastStreamID, excludedAbove)
	s.wakeSlotWaitersLocked()
	s.mu.Unlock()
	for _, st := range excluded {
		st.failBy(refusedBy(g))
	}
	return nil
}

// ownStreamsBetweenLocked returns this side's streams with ids in
// (low, high], looking up the ids one by one or walking the table,
// whichever is shorter.
func (s *Session) ownStreamsBetweenLocked(low, high uint32) []*Stream {
	if high <= low {
		return nil
	}
	var found []*Stream
	if (high-low)/2 < uint32(len(s.streams)) {
		first := low + 1
		if s.isPeerID(first) {
			first++
		}
		for id := first; id <= high && id >= first; id += 2 {
			if st := s.streams[id]; st != nil {
				found = append(found, st)
			}
		}
		return found
	}
	for id, st := range s.streams {
		if !s.isPeerID(id) && id > low && id <= high {
			found = append(found, st)
		}
	}
	return found
}

// writeFailure returns the error a write to the connection failed with, or
// nil.
func (s *Session) writeFailure() error {
	if s.smux != nil {
		if f := s.smux.conn.fl.Load(); f != nil {
			return f.failure()
		}
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeErr
}
