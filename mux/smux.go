package mux

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/xtaci/smux"
)

// The Smux transport: sessions that speak github.com/xtaci/smux protocol
// version 2 underneath the same Session and Stream API. Each stream starts
// with its type and, the other way, an admission status; each side sends
// its stream limit on a settings stream. So admission (OpenType waits for a
// slot, ErrRefused past the limit), accept queues, Close's drain and the
// session's end are shared with the native engine; frames, flow control
// and keepalive are smux's. What smux cannot give is refused plainly
// (ErrUnsupported): Reset, GoAway, Ping and CloseWrite.

func newSmuxSession(ctx context.Context, conn net.Conn, c Config, client bool, s *Session) (*Session, error) {
	// With no preface exchange to drive it, a TLS handshake would wait for
	// the first stream; finish it now, so that its failure fails here and
	// its state is known from the start.
	if tc, ok := conn.(*tls.Conn); ok {
		hctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("mux: TLS handshake: %w", err)
		}
	}
	sc := smux.DefaultConfig()
	sc.Version = 2
	sc.MaxFrameSize = min(c.MaxFrameSize, 65535)
	sc.MaxStreamBuffer = c.StreamWindow
	// One receive budget for the whole session freezes every stream when it
	// runs out (smux's head-of-line freeze), so size it for the worst case:
	// every admitted stream holding a full first window of 256 KiB.
	sc.MaxReceiveBuffer = max(sc.MaxReceiveBuffer, min(max(c.StreamWindow, 256<<10)*(c.MaxIncomingStreams+1), 1<<30))
	if c.KeepAliveInterval < 0 {
		sc.KeepAliveDisabled = true
	} else {
		sc.KeepAliveInterval, sc.KeepAliveTimeout = c.KeepAliveInterval, c.KeepAliveTimeout
	}
	if err := smux.VerifyConfig(sc); err != nil {
		return nil, fmt.Errorf("mux: config for the Smux transport: %w", err)
	}
	var err error
	rw := smuxConn{conn, s}
	if client {
		s.smux, err = smux.Client(rw, sc)
	} else {
		s.smux, err = smux.Server(rw, sc)
	}
	if err != nil {
		return nil, fmt.Errorf("mux: starting smux: %w", err)
	}
	// Until the peer's settings arrive, its stream limit is unknown.
	s.peer = settings{maxIncomingStreams: maxStreamID, initialWindow: uint32(c.StreamWindow), maxFrameSize: uint32(sc.MaxFrameSize)}
	if err := s.smuxSendSettings(); err != nil {
		s.smux.Close()
		return nil, fmt.Errorf("mux: sending settings over smux: %w", err)
	}
	s.wg.Add(1)
	go s.smuxAcceptLoop()
	return s, nil
}

// The Smux transport's own additions to smux, in each stream's first
// bytes: the opener sends the stream's type (a uvarint), and the acceptor
// answers with an admission status byte in front of its first byte, or
// alone before closing a stream it refuses. A stream of the reserved type
// smuxSettingsType carries a side's settings instead: its limit of
// incoming streams as a uvarint.
const (
	smuxAdmitted     byte       = 0
	smuxRefused      byte       = 1
	smuxSettingsType StreamType = 1<<32 - 1
)

// smuxSendSettings tells the peer this side's stream limit, so that its
// OpenType waits for a free slot as on the native transport.
func (s *Session) smuxSendSettings() error {
	sms, err := s.smux.OpenStream()
	if err != nil {
		return err
	}
	runtime.SetFinalizer(sms, nil)
	b := binary.AppendUvarint(nil, uint64(smuxSettingsType))
	b = binary.AppendUvarint(b, uint64(s.cfg.MaxIncomingStreams))
	_, err = sms.Write(b)
	sms.Close()
	return err
}

// smuxTakeSettings reads the peer's settings from its settings stream.
func (s *Session) smuxTakeSettings(sms *smux.Stream) {
	defer sms.Close()
	limit, err := binary.ReadUvarint(byteReader{sms})
	if err != nil {
		return
	}
	s.mu.Lock()
	s.peer.maxIncomingStreams = uint32(min(limit, maxStreamID))
	if s.slotFreed != nil {
		close(s.slotFreed)
		s.slotFreed = nil
	}
	s.mu.Unlock()
}

// smuxConn is the connection as smux sees it: a failed read ends the
// session, with its reason, before smux tells the streams, so that they
// report the session's error rather than a bare io.EOF.
type smuxConn struct {
	net.Conn
	s *Session
}

func (c smuxConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !errors.Is(err, net.ErrClosed) { // a local close: smuxAcceptLoop says why
		c.s.fail(c.s.connError(err, 0))
	}
	return n, err
}

// smuxAcceptLoop takes every stream smux accepts, so that smux's fixed
// accept backlog never fills and freezes the session, and admits each once
// its type has arrived.
func (s *Session) smuxAcceptLoop() {
	defer s.wg.Done()
	for {
		sms, err := s.smux.AcceptStream()
		if err != nil {
			if errors.Is(err, io.ErrClosedPipe) {
				// smux closes its session itself only when its keepalive
				// finds the peer silent; when this side closed it, fail has
				// recorded why already and ignores this.
				err = ErrKeepAliveTimeout
			}
			s.fail(err)
			return
		}
		runtime.SetFinalizer(sms, nil) // smux would close a dropped stream behind the application's back
		s.wg.Add(1)
		go s.smuxServe(sms)
	}
}

// smuxServe admits a new stream and runs the handler that takes it, if
// any. Only the admission counts in the session's wait group: the handler
// is the application's, and may itself close the session, which waits for
// that group.
func (s *Session) smuxServe(sms *smux.Stream) {
	if st, handle := s.smuxAdmit(sms); handle != nil {
		handle(st)
	}
}

// smuxAdmit reads a new stream's type, within the handshake timeout, and
// queues the stream for AcceptType, or returns it with the handler for its
// type; or closes it over the stream limit.
func (s *Session) smuxAdmit(sms *smux.Stream) (*Stream, func(*Stream)) {
	defer s.wg.Done()
	sms.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	t, err := binary.ReadUvarint(byteReader{sms})
	if err == nil && StreamType(t) == smuxSettingsType {
		s.smuxTakeSettings(sms)
		return nil, nil
	}
	sms.SetReadDeadline(time.Time{})
	if err != nil || t > 1<<32-1 {
		sms.Close()
		return nil, nil
	}
	s.mu.Lock()
	if s.err != nil || s.closing || s.numIn >= s.cfg.MaxIncomingStreams {
		s.mu.Unlock()
		sms.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
		sms.Write([]byte{smuxRefused})
		sms.Close()
		return nil, nil
	}
	st := &Stream{sess: s, typ: StreamType(t), in: true, sm: sms}
	st.opened.Store(true)
	s.numIn++
	handle := s.admitLocked(st)
	s.mu.Unlock()
	return st, handle
}

// smuxOpen opens a smux stream of type t for OpenType, which has taken its
// slot.
func (s *Session) smuxOpen(t StreamType) (*Stream, error) {
	st := &Stream{sess: s, typ: t}
	sms, err := s.smux.OpenStream()
	if err == nil {
		runtime.SetFinalizer(sms, nil)
		_, err = sms.Write(binary.AppendUvarint(nil, uint64(t)))
	}
	if err != nil {
		if sms != nil {
			sms.Close()
		}
		s.forget(st)
		return nil, refusedBy(fmt.Errorf("mux: opening a smux stream: %w", err))
	}
	st.sm = sms
	st.opened.Store(true)
	return st, nil
}

func (st *Stream) smuxRead(p []byte) (int, error) {
	if !st.in && !st.smuxStatusDone.Load() {
		if err := st.smuxReadStatus(); err != nil {
			return 0, err
		}
	}
	n, err := st.sm.Read(p)
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

func (st *Stream) smuxWrite(p []byte) (int, error) {
	if st.in && !st.smuxStatusDone.Load() {
		return st.smuxWriteFirst(p)
	}
	n, err := st.sm.Write(p)
	return n, st.smuxErr(err)
}

// smuxWriteFirst writes an accepted stream's first bytes behind its
// admission status.
func (st *Stream) smuxWriteFirst(p []byte) (int, error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if st.smuxStatusDone.Load() {
		n, err := st.sm.Write(p)
		return n, st.smuxErr(err)
	}
	b := make([]byte, 1+len(p))
	b[0] = smuxAdmitted
	copy(b[1:], p)
	n, err := st.sm.Write(b)
	st.smuxStatusDone.Store(true)
	return max(n-1, 0), st.smuxErr(err)
}

// smuxClose closes a smux stream once and frees its slot.
func (st *Stream) smuxClose() error {
	st.mu.Lock()
	already := st.closed
	st.closed = true
	st.mu.Unlock()
	if already {
		return nil
	}
	err := st.sm.Close()
	st.sess.forget(st)
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
