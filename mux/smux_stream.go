package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/xtaci/smux"
)

// A Stream on the Smux transport: the admission status in front of its
// bytes, and smux's errors in this package's terms.

// smuxOpen opens a smux stream of type t for OpenType, which has taken its
// slot. The type is not written yet: it goes in front of the stream's
// first bytes, in the same frame, or alone before its first Read, or
// alone once the stream has gone unused for a while (see smuxAnnounce,
// announceLater). Until then st.opened is false: on this transport it
// says that the peer has been told the stream's type, which is when the
// peer admits the stream.
func (s *Session) smuxOpen(t StreamType) (*Stream, error) {
	st := &Stream{sess: s, typ: t}
	sms, err := s.smux.OpenStream()
	if err != nil {
		if sms != nil {
			s.smux.closeStream(sms)
		}
		s.forget(st)
		return nil, refusedBy(fmt.Errorf("mux: opening a smux stream: %w", err))
	}
	runtime.SetFinalizer(sms, nil)
	st.sm = sms
	s.smux.attach(st)
	s.smux.announceLater(s)
	return st, nil
}

// smuxAnnounce sends the type of a stream this side opened and has not
// written to, so that the peer admits it and a Read waiting for the peer
// to speak first is not waiting in vain. A Write under way sends the type
// itself.
func (st *Stream) smuxAnnounce() {
	if !st.writeMu.TryLock() {
		return
	}
	defer st.writeMu.Unlock()
	if !st.opened.Load() && !st.smuxPeerClosed.Load() {
		st.smuxWriteCopy(nil) // an error here is the Read's to find
	}
}

func (st *Stream) smuxRead(p []byte) (int, error) {
	if !st.in && !st.opened.Load() {
		st.smuxAnnounce()
	}
	if !st.in && !st.smuxStatusDone.Load() {
		if err := st.smuxReadStatus(); err != nil {
			return 0, err
		}
	}
	n, err := st.sm.Read(p)
	if n > 0 {
		// smux returns what it read with the error of the window update
		// it sends after: the end of the session, say, while more is
		// buffered. The next Read reports it once the rest is read.
		return n, nil
	}
	return n, st.smuxErr(err)
}

// smuxReadStatus reads the admission status byte in front of what the
// acceptor of an opened stream sends.
func (st *Stream) smuxReadStatus() error {
	st.smuxStatusMu.Lock()
	defer st.smuxStatusMu.Unlock()
	if st.smuxStatusDone.Load() {
		return st.smuxStatusErr
	}
	var status [1]byte
	if _, err := io.ReadFull(st.sm, status[:]); err != nil {
		return st.smuxErr(err) // nothing came: the stream ended or failed, or a deadline passed
	}
	switch {
	case status[0] == smuxRefused:
		st.smuxStatusErr = fmt.Errorf("%w: the peer is at its limit of streams", ErrRefused)
	case status[0] != smuxAdmitted:
		st.smuxStatusErr = fmt.Errorf("%w: admission status %#x", ErrProtocol, status[0])
	}
	st.smuxStatusDone.Store(true)
	return st.smuxStatusErr
}

// smuxWrite writes p, one writer at a time, as the native engine does
// (and as smuxPeerGone relies on). smux may read a buffer after its Write
// has failed: a Write that ends at its deadline or with the session
// leaves its frames queued, and smux sends them when it gets to them. So
// smux never gets the caller's p, which the caller may reuse at once, but
// a copy (see smuxWriteCopy); a copy whose Write failed is left to smux
// and never used again.
func (st *Stream) smuxWrite(p []byte) (int, error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if st.smuxPeerClosed.Load() {
		return 0, st.smuxWriteErr(errSmuxPeerClosed)
	}
	n, err := st.smuxWriteCopy(p)
	return n, st.smuxWriteErr(err)
}

// smux gets copies of what it is to write (see smuxWriteCopy), in
// buffers of two sizes: small ones for the many short writes, and large
// ones of four full frames for bulk.
const (
	smuxSmallCopy = 8 << 10
	smuxLargeCopy = 4 * 65535
)

var smuxCopies = [2]sync.Pool{
	{New: func() any { b := make([]byte, smuxSmallCopy); return &b }},
	{New: func() any { b := make([]byte, smuxLargeCopy); return &b }},
}

// smuxMaxHead is the most this transport puts in front of a stream's
// first bytes: a stream type, as a uvarint of at most 32 bits.
const smuxMaxHead = binary.MaxVarintLen32

// smuxWriteCopy writes p through smux in copies, each a whole number of
// frames where it can, behind what the stream's first bytes carry: the
// type on a stream this side opened, the admission status on one the
// peer opened. It reports the bytes of p written. The caller holds
// writeMu.
//
// A smux Write that gives up (at a deadline, or as the session ends)
// leaves its frame queued, and smux may read the frame's bytes after it
// returned: so smux never gets the caller's buffer, which the caller may
// reuse at once, and a copy that smux may still read is not pooled again.
func (st *Stream) smuxWriteCopy(p []byte) (int, error) {
	var head []byte
	var headBuf [smuxMaxHead]byte
	switch {
	case !st.in && !st.opened.Load():
		head = binary.AppendUvarint(headBuf[:0], uint64(st.typ))
	case st.in && !st.smuxStatusDone.Load():
		head = append(headBuf[:0], smuxAdmitted)
	}
	if len(head)+len(p) == 0 {
		return 0, nil
	}
	pool := &smuxCopies[0]
	chunk := smuxSmallCopy
	if len(head)+len(p) > smuxSmallCopy {
		pool = &smuxCopies[1]
		frame := int(st.sess.peer.maxFrameSize) // smux's frame size on this session
		chunk = smuxLargeCopy / frame * frame
	}
	bp := pool.Get().(*[]byte)
	written := 0
	for first := true; first || len(p) > 0; first = false {
		b := append((*bp)[:0], head...)
		k := copy(b[len(b):chunk], p)
		b = b[:len(b)+k]
		n, err := st.sm.Write(b)
		if first && len(head) > 0 {
			// Whatever smux took of the head went: the stream's start is
			// the peer's now, and is never sent again.
			if st.in {
				st.smuxStatusDone.Store(true)
			} else {
				st.opened.Store(true)
			}
			n = max(n-len(head), 0)
			head = nil
		}
		written += n
		if err != nil {
			return written, err // *bp is left to the collector
		}
		p = p[k:]
	}
	pool.Put(bp)
	return written, nil
}

// smuxWriteErr reports a write's error in this package's terms. A write
// that failed because the peer closed the stream reports so, or, on a
// stream the peer refused, the refusal, which proves the stream was never
// processed.
func (st *Stream) smuxWriteErr(err error) error {
	if err == nil {
		return nil
	}
	st.mu.Lock()
	closed := st.closed
	st.mu.Unlock()
	if closed || !st.smuxPeerClosed.Load() {
		return st.smuxErr(err)
	}
	if !st.in {
		// The status came before the peer's FIN, so reading it waits for
		// little; but smux drops what arrives for a stream it has not yet
		// registered (a peer that closed at once), so the wait is bounded.
		st.sm.SetReadDeadline(time.Now().Add(smuxStatusWait))
		serr := st.smuxReadStatus()
		st.sm.SetReadDeadline(fromUnixNanos(st.smuxReadDeadline.Load()))
		if errors.Is(serr, ErrRefused) {
			return serr
		}
	}
	return errSmuxPeerClosed
}

// smuxStatusWait bounds how long a failed Write waits for the admission
// status of a stream the peer has closed.
const smuxStatusWait = 500 * time.Millisecond

// smuxOnAbort is OnAbort on the Smux transport: f runs once the peer's
// FIN has arrived or the session has ended (see smuxAbort), unless this
// side closed the stream first.
func (st *Stream) smuxOnAbort(f func()) {
	st.mu.Lock()
	aborted := st.aborted
	if !aborted && !st.closed {
		st.onAbort = f
	}
	st.mu.Unlock()
	if aborted {
		f()
	}
}

// smuxAbort notes that the stream ended without this side's close: the
// peer closed it, or the session ended. It runs the OnAbort function, if
// any, once; on the goroutine that noticed, smux's receiving goroutine or
// the session's fail.
func (st *Stream) smuxAbort() {
	st.mu.Lock()
	if st.aborted || st.closed {
		st.mu.Unlock()
		return
	}
	st.aborted = true
	f := st.onAbort
	st.onAbort = nil
	st.mu.Unlock()
	if f != nil {
		f()
	}
}

// smuxClose closes a smux stream once and frees its slot.
func (st *Stream) smuxClose() error {
	st.mu.Lock()
	already := st.closed
	st.closed = true
	st.onAbort = nil // this side's close is no abort
	st.mu.Unlock()
	if already {
		return nil
	}
	err := st.sess.smux.closeStream(st.sm)
	// The stream's last bytes and its FIN leave before the session stops
	// counting it, so that a graceful Close, which half-closes the
	// connection once no stream is left, does not cut them off.
	st.sess.smux.afterSent(smuxEnd{st: st})
	st.sess.release(st)
	return err
}

// smuxErr reports smux's errors in this package's terms.
func (st *Stream) smuxErr(err error) error {
	if err == nil {
		return nil
	}
	st.mu.Lock()
	closed := st.closed
	st.mu.Unlock()
	switch {
	case closed: // smux reports io.EOF or io.ErrClosedPipe after Close
		return ErrStreamClosed
	case err == io.EOF:
		if serr := st.sess.Err(); serr != nil {
			return serr // the connection ended, not the stream
		}
		return err
	case errors.Is(err, smux.ErrTimeout):
		return os.ErrDeadlineExceeded // as net.Conn promises
	case errors.Is(err, io.ErrClosedPipe):
		if st.sess.smux.IsClosed() { // the session ended; report why
			<-st.sess.done // soon: smuxAcceptLoop or fail records it
			return st.sess.err
		}
		return io.EOF
	}
	return err
}

// byteReader reads one byte at a time, for reading a stream's type without
// consuming anything after it.
type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var one [1]byte
	_, err := io.ReadFull(b.r, one[:])
	return one[0], err
}

// smuxWriteLastIn is WriteLast on a stream the peer opened: the stream is
// forgotten, freeing its slot, before p is written, and a Close meanwhile
// waits for p to leave as for a stream in flight.
func (st *Stream) smuxWriteLastIn(p []byte) (int, error) {
	s := st.sess
	s.mu.Lock()
	s.lastWrites++
	s.mu.Unlock()
	s.forget(st)
	n, err := st.smuxWrite(p)
	s.smux.afterSent(smuxEnd{st: st, last: true}) // p leaves before Close may end the connection
	return n, err
}
