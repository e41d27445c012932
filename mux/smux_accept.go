package mux

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/xtaci/smux"
)

// How the Smux transport takes the peer's streams: each is charged to the
// stream limit as it arrives, refused past it, and admitted once its type
// has arrived.

// smuxAcceptLoop takes every stream smux accepts, so that smux's fixed
// accept backlog never fills and freezes the session. Each stream takes a
// slot of MaxIncomingStreams at once, while it waits for its type, so
// that at most that many streams wait to be admitted, each on a goroutine;
// a stream over the limit is refused (see smuxRefuseLater).
func (s *Session) smuxAcceptLoop() {
	defer s.wg.Done()
	refusing := make(chan struct{}, smuxRefusers(s.cfg))
	for {
		sms, err := s.smux.AcceptStream()
		if err != nil {
			if errors.Is(err, io.ErrClosedPipe) {
				// smux closes its session itself only when its keepalive
				// finds the peer silent (its timeout is off: see
				// smuxKeepAlive); when this side closed it, fail has
				// recorded why already and ignores this.
				err = ErrKeepAliveTimeout
			}
			if errors.Is(err, smux.ErrInvalidProtocol) {
				err = fmt.Errorf("%w: %w", ErrProtocol, err) // a frame smux cannot read
			}
			s.fail(err)
			return
		}
		runtime.SetFinalizer(sms, nil) // smux would close a dropped stream behind the application's back
		st := &Stream{sess: s, in: true, sm: sms}
		if !s.smuxCharge(st) {
			s.smuxRefuseLater(sms, refusing)
			continue
		}
		st.opened.Store(true)
		s.smux.attach(st)
		s.wg.Add(1)
		go s.smuxServe(st)
	}
}

// smuxCharge counts a new incoming stream toward MaxIncomingStreams. It
// reports false for a stream over the limit, or one arriving after the
// session began to close.
func (s *Session) smuxCharge(st *Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.closing || s.refuseLocked() {
		return false
	}
	s.chargeLocked(st)
	return true
}

// smuxRefusers bounds the streams over the limit that wait for their first
// bytes to be refused: as many as the limit, and at least 16. An opener
// that keeps to the limit still sends some streams over it, since smux
// tells no side of the other's close: this side counts a stream until its
// own handler closes it, the opener only until its own close. Those
// streams must get a refusal, which is retry-safe, not a bare close.
func smuxRefusers(c Config) int { return max(16, c.MaxIncomingStreams) }

// smuxRefuseLater refuses a stream over the limit once its first bytes
// have arrived, not before: smux registers a stream it opens only after
// sending its SYN, and drops what arrives for the stream before then, so
// an answer to a bare SYN may never reach the opener. At most
// smuxRefusers streams wait so, each on a goroutine of its own; beyond
// them, the stream is closed at once, without a status: its opener has
// that many streams open on which it writes nothing.
func (s *Session) smuxRefuseLater(sms *smux.Stream, refusing chan struct{}) {
	select {
	case refusing <- struct{}{}:
	default:
		s.smux.closeStream(sms)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-refusing }()
		sms.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
		var first [1]byte
		if _, err := sms.Read(first[:]); err != nil {
			s.smux.closeStream(sms)
			return
		}
		s.smuxRefuse(sms)
	}()
}

// smuxRefuse tells the opener of sms that the stream is refused, and
// closes it once the opener has closed it too, sent smuxRefuseDrain more
// bytes, or let the handshake timeout pass. A close right behind the
// status was seen to reach the opener, now and then, as a bare end of
// stream without the status, which would leave it unsure whether the
// stream was processed. An opener still writing learns of the refusal
// from the close.
func (s *Session) smuxRefuse(sms *smux.Stream) {
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	sms.SetWriteDeadline(deadline)
	if _, err := sms.Write(smuxRefusedStatus); err == nil {
		sms.SetReadDeadline(deadline)
		io.CopyN(io.Discard, sms, smuxRefuseDrain)
	}
	s.smux.closeStream(sms)
}

// smuxRefuseDrain bounds what a refused stream's opener may still send
// before the stream is closed.
const smuxRefuseDrain = 64 << 10

// smuxServe admits a new stream and runs the handler that takes it, if
// any. Only the admission counts in the session's wait group: the handler
// is the application's, and may itself close the session, which waits for
// that group.
func (s *Session) smuxServe(st *Stream) {
	if handle := s.smuxAdmit(st); handle != nil {
		s.serve(st, handle)
	}
}

// smuxAdmit reads a new stream's type, within the handshake timeout, and
// queues the stream for AcceptType, or returns the handler for its type.
// It closes a stream without a valid type. A stream whose type arrives
// after Close began is admitted all the same: it took its slot before, so
// Close counts it as in flight and waits for it.
//
// Usually the stream's first data frame, which starts with the type, has
// come by now, and then the read needs no deadline: a deadline costs smux
// an allocation to set and to clear, and a timer for each read, and for
// the window update that smux sends on a stream's first read.
func (s *Session) smuxAdmit(st *Stream) func(*Stream) {
	defer s.wg.Done()
	sms := st.sm
	t, err := s.smuxReadType(sms)
	if err != nil || t >= uint64(smuxSettingsType) {
		s.smux.closeStream(sms)
		s.forget(st)
		return nil
	}
	st.typ = StreamType(t)
	s.mu.Lock()
	if s.err != nil { // the session ended meanwhile
		s.mu.Unlock()
		s.smux.closeStream(sms)
		s.forget(st)
		return nil
	}
	handle := s.admitLocked(st)
	s.mu.Unlock()
	return handle
}

// smuxReadType reads a new stream's type, a uvarint, a byte at a time, so
// as to consume nothing after it. Its first byte has come when the
// stream's first data frame has, and is then read without a deadline; a
// byte read before that, or after it (a frame may end within the type),
// is read by the handshake timeout. A type of more than five bytes, over
// 32 bits, fails.
func (s *Session) smuxReadType(sms *smux.Stream) (uint64, error) {
	bounded := !s.smux.hasPeerData(sms)
	if bounded {
		sms.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	}
	var t uint64
	var err error
	for i := 0; ; i++ {
		if i == smuxMaxHead {
			err = errSmuxLongType
			break
		}
		if i == 1 && !bounded {
			bounded = true
			sms.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
		}
		var b byte
		if b, err = (byteReader{sms}).ReadByte(); err != nil {
			break
		}
		t |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			break
		}
	}
	if bounded {
		sms.SetReadDeadline(time.Time{})
	}
	return t, err
}

// errSmuxLongType is smuxReadType's error for a type that does not end
// within five bytes.
var errSmuxLongType = errors.New("mux: a smux stream's type is longer than 32 bits")
