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
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// The Smux transport: sessions that speak github.com/xtaci/smux protocol
// version 2 underneath the same Session and Stream API. Each side first
// sends its stream limit on a settings stream, and a session starts only
// once the peer's has arrived: that is the transport's handshake. Each
// stream then starts with its type and, the other way, an admission
// status. So admission (OpenType waits for a slot, ErrRefused past the
// limit), accept queues, Close's drain and the session's end are shared
// with the native engine; frames, flow control and keepalive are smux's.
// What smux cannot give is refused plainly (ErrUnsupported): Reset,
// GoAway, Ping and CloseWrite.
//
// This package also follows the smux frames as they pass (see smuxConn),
// for what smux does not tell: which streams the peer has closed, so that
// writing to one fails at once instead of waiting for window forever.

// newSmuxSession runs the Smux transport's handshake on conn and starts the
// session. It returns once the peer's settings have arrived; it fails after
// the handshake timeout, or when ctx ends, first.
func newSmuxSession(ctx context.Context, conn net.Conn, c Config, client bool, s *Session) (*Session, error) {
	sc, err := smuxConfig(c)
	if err != nil {
		return nil, err
	}
	hb := boundHandshake(ctx, conn, c.HandshakeTimeout)
	rw := &smuxConn{Conn: conn}
	if err := s.smuxHandshake(ctx, rw, sc, client); err != nil {
		if s.smux != nil {
			s.smux.Close()
		}
		return nil, hb.fail(err)
	}
	rw.sess.Store(s) // from now on a failed read ends the session
	err = hb.done()
	if err == nil {
		// smux reads all along: the handshake's deadline may have ended
		// the session just as the handshake succeeded.
		err = s.Err()
	}
	if err != nil {
		s.smux.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.smuxAcceptLoop()
	return s, nil
}

// smuxConfig returns the smux configuration for c.
func smuxConfig(c Config) (*smux.Config, error) {
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
	return sc, nil
}

// smuxHandshake starts smux on rw, sends this side's settings and reads
// the peer's, all under the connection's handshake deadline. The server
// starts smux only once the client's settings have arrived (see
// readSmuxHello), so that a connection that sends nothing, or too little,
// costs no smux session.
func (s *Session) smuxHandshake(ctx context.Context, rw *smuxConn, sc *smux.Config, client bool) error {
	// With no preface exchange to drive it, a TLS handshake would wait for
	// the first stream; finish it now, so that its failure fails here and
	// its state is known from the start.
	if tc, ok := rw.Conn.(*tls.Conn); ok {
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("mux: TLS handshake: %w", err)
		}
	}
	if !client {
		hello, err := readSmuxHello(rw.Conn)
		if err != nil {
			return err
		}
		rw.replay = hello
	}
	t := &smuxSession{streams: make(map[uint32]smuxEntry)}
	rw.in.on, rw.out.on = t.peerFrame, t.ownFrame
	var err error
	t.Session, err = startSmux(rw, sc, client)
	if err != nil {
		return fmt.Errorf("mux: starting smux: %w", err)
	}
	s.smux = t
	if err := s.smuxSendSettings(); err != nil {
		return fmt.Errorf("mux: handshake: sending settings over smux: %w", err)
	}
	limit, err := s.smuxReadSettings()
	if err != nil {
		return err
	}
	s.peer = settings{maxIncomingStreams: limit, initialWindow: uint32(s.cfg.StreamWindow), maxFrameSize: uint32(sc.MaxFrameSize)}
	return nil
}

// The Smux transport's own additions to smux, in each stream's first
// bytes: the opener sends the stream's type (a uvarint), and the acceptor
// answers with an admission status byte in front of its first byte, or
// alone before closing a stream it refuses. A stream of the reserved type
// smuxSettingsType carries a side's settings instead: its limit of
// incoming streams as a uvarint. It is the first stream each side opens,
// and the only one of that type.
const (
	smuxAdmitted     byte       = 0
	smuxRefused      byte       = 1
	smuxSettingsType StreamType = 1<<32 - 1
)

// smuxRefusedStatus is what a refused stream gets; smux may keep it queued
// after a Write times out, so it is never written to.
var smuxRefusedStatus = []byte{smuxRefused}

// errSmuxPeerClosed is Write's error on a stream the peer has closed.
var errSmuxPeerClosed = fmt.Errorf("mux: write on a stream the peer closed: %w", io.EOF)

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
	s.smux.closeStream(sms)
	return err
}

// smuxReadSettings takes the peer's settings stream, the first stream it
// opens, and returns the stream limit the peer announces.
func (s *Session) smuxReadSettings() (uint32, error) {
	sms, err := s.smux.AcceptStream()
	if err != nil {
		if errors.Is(err, smux.ErrInvalidProtocol) {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return 0, fmt.Errorf("mux: handshake: waiting for the peer's settings: %w", err)
	}
	runtime.SetFinalizer(sms, nil)
	defer s.smux.closeStream(sms)
	r := byteReader{sms}
	t, err := binary.ReadUvarint(r)
	if err == nil && t != uint64(smuxSettingsType) {
		return 0, fmt.Errorf("mux: handshake: %w: the peer's first stream has type %d, not its settings", ErrProtocol, t)
	}
	var limit uint64
	if err == nil {
		limit, err = binary.ReadUvarint(r)
	}
	if err != nil {
		return 0, fmt.Errorf("mux: handshake: reading the peer's settings: %w", err)
	}
	return uint32(min(limit, maxStreamID)), nil
}

// What this package reads of smux's wire format (smux's frame.go): an
// 8-byte header of version, command, little-endian payload length and
// stream id, then the payload.
const (
	smuxVersion   = 2
	smuxHeaderLen = 8
	smuxSYN       = 0 // a stream opens
	smuxFIN       = 1 // the sender closed the stream
	smuxPSH       = 2 // data
	smuxNOP       = 3 // keepalive
)

// smuxHelloMax bounds what readSmuxHello reads: ample for the frames up to
// the client's settings, which take at most 31 bytes.
const smuxHelloMax = 64

// readSmuxHello reads the client's first frames, up to the first data frame
// of its first stream, which carries its settings, and returns them for
// smux to read again. It reads them into a small array, so that a silent
// or slow client costs nothing more until they are in; and it checks them
// enough to tell that the peer speaks smux version 2.
func readSmuxHello(r io.Reader) ([]byte, error) {
	var buf [smuxHelloMax]byte
	n := 0
	opened := false
	var sid uint32
	for {
		if n+smuxHeaderLen > len(buf) {
			return nil, fmt.Errorf("mux: handshake: %w: no settings in the peer's first %d bytes", ErrProtocol, n)
		}
		h := buf[n : n+smuxHeaderLen]
		k, err := io.ReadFull(r, h)
		if k > 0 && h[0] != smuxVersion {
			return nil, fmt.Errorf("mux: handshake: %w: got %q", ErrNotMuxrpc, buf[:n+k])
		}
		if err != nil {
			return nil, fmt.Errorf("mux: handshake: reading the peer's settings: %w", err)
		}
		n += smuxHeaderLen
		cmd, length, id := h[1], int(binary.LittleEndian.Uint16(h[2:])), binary.LittleEndian.Uint32(h[4:])
		switch {
		case cmd == smuxNOP && length == 0:
		case cmd == smuxSYN && length == 0 && !opened:
			opened, sid = true, id
		case cmd == smuxPSH && opened && id == sid && length > 0 && n+length <= len(buf):
			if _, err := io.ReadFull(r, buf[n:n+length]); err != nil {
				return nil, fmt.Errorf("mux: handshake: reading the peer's settings: %w", err)
			}
			return append([]byte(nil), buf[:n+length]...), nil
		default:
			return nil, fmt.Errorf("mux: handshake: %w: smux frame %x before the peer's settings", ErrProtocol, h)
		}
	}
}

// smuxSession is a session's smux machinery: the smux session, and what
// this package learns of its streams from the frames that pass.
type smuxSession struct {
	*smux.Session

	mu      sync.Mutex
	streams map[uint32]smuxEntry // by smux stream id, from SYN until this side closes the stream
}

// smuxEntry is what is known of a smux stream: this package's Stream, once
// there is one, and whether the peer has closed the stream.
type smuxEntry struct {
	st         *Stream
	peerClosed bool
}

// ownFrame sees each frame this side sends, before it leaves: a stream
// this side opens is tracked before the peer can answer it.
func (t *smuxSession) ownFrame(cmd byte, sid uint32) {
	if cmd == smuxSYN {
		t.track(sid)
	}
}

// peerFrame sees each frame the peer sends, before smux reads it.
func (t *smuxSession) peerFrame(cmd byte, sid uint32) {
	switch cmd {
	case smuxSYN:
		t.track(sid)
	case smuxFIN:
		t.peerClosed(sid)
	}
}

// track starts tracking a stream that opens; as in smux, a SYN for a
// stream already open changes nothing.
func (t *smuxSession) track(sid uint32) {
	t.mu.Lock()
	if _, ok := t.streams[sid]; !ok {
		t.streams[sid] = smuxEntry{}
	}
	t.mu.Unlock()
}

// peerClosed records the peer's FIN on a stream, and fails its writes.
func (t *smuxSession) peerClosed(sid uint32) {
	t.mu.Lock()
	e, ok := t.streams[sid]
	if ok {
		e.peerClosed = true
		t.streams[sid] = e
	}
	t.mu.Unlock()
	if e.st != nil {
		e.st.smuxPeerGone()
	}
}

// attach ties st to its smux stream's entry.
func (t *smuxSession) attach(st *Stream) {
	sid := st.sm.ID()
	t.mu.Lock()
	e := t.streams[sid]
	e.st = st
	t.streams[sid] = e
	t.mu.Unlock()
	if e.peerClosed {
		st.smuxPeerGone()
	}
}

// closeStream stops tracking sms and closes it.
func (t *smuxSession) closeStream(sms *smux.Stream) error {
	t.mu.Lock()
	delete(t.streams, sms.ID())
	t.mu.Unlock()
	return sms.Close()
}

// smuxPeerGone fails the stream's writes once the peer has closed it: smux
// itself would go on taking them, and then wait for window that never
// comes. A Write under way, which may be waiting so, is woken by a past
// write deadline; one that starts later sees the flag, since both hold
// writeMu. (Setting a smux deadline allocates: only when a Write is under
// way.)
func (st *Stream) smuxPeerGone() {
	st.smuxPeerClosed.Store(true)
	if st.writeMu.TryLock() {
		st.writeMu.Unlock()
		return
	}
	st.sm.SetWriteDeadline(time.Unix(1, 0))
}

// smuxConn is the connection as smux sees it. It follows the frames in
// both directions for smuxSession; it first replays what the handshake
// read before smux started; and once the session is established, a failed
// read ends the session, with its reason, before smux tells the streams,
// so that they report the session's error rather than a bare io.EOF.
type smuxConn struct {
	net.Conn
	sess    atomic.Pointer[Session] // set once the handshake is done
	replay  []byte                  // read by the handshake, for smux to read
	in, out smuxScanner             // used by smux's receiving and sending goroutines
}

func (c *smuxConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		c.in.scan(p[:n])
		return n, nil
	}
	n, err := c.Conn.Read(p)
	c.in.scan(p[:n])
	if err != nil && !errors.Is(err, net.ErrClosed) { // a local close: smuxAcceptLoop says why
		if s := c.sess.Load(); s != nil {
			s.fail(s.connError(err, 0))
		}
	}
	return n, err
}

func (c *smuxConn) Write(p []byte) (int, error) {
	c.out.scan(p)
	return c.Conn.Write(p)
}

// startSmux starts a smux session on rw.
func startSmux(rw *smuxConn, sc *smux.Config, client bool) (*smux.Session, error) {
	if client {
		return smux.Client(rw, sc)
	}
	return smux.Server(rw, sc)
}

// smuxScanner follows the frames of one direction of a smux connection,
// however the bytes are split, and calls on with each frame's command and
// stream id.
type smuxScanner struct {
	on   func(cmd byte, sid uint32)
	hdr  [smuxHeaderLen]byte
	n    int // bytes of hdr filled
	skip int // payload bytes still to pass
}

func (sc *smuxScanner) scan(b []byte) {
	for len(b) > 0 {
		if sc.skip > 0 {
			k := min(sc.skip, len(b))
			sc.skip -= k
			b = b[k:]
			continue
		}
		k := copy(sc.hdr[sc.n:], b)
		sc.n += k
		b = b[k:]
		if sc.n < smuxHeaderLen {
			return
		}
		sc.n = 0
		sc.skip = int(binary.LittleEndian.Uint16(sc.hdr[2:]))
		sc.on(sc.hdr[1], binary.LittleEndian.Uint32(sc.hdr[4:]))
	}
}

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
				// finds the peer silent; when this side closed it, fail has
				// recorded why already and ignores this.
				err = ErrKeepAliveTimeout
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
// closes it.
func (s *Session) smuxRefuse(sms *smux.Stream) {
	sms.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sms.Write(smuxRefusedStatus)
	s.smux.closeStream(sms)
}

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
func (s *Session) smuxAdmit(st *Stream) func(*Stream) {
	defer s.wg.Done()
	sms := st.sm
	sms.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	t, err := binary.ReadUvarint(byteReader{sms})
	sms.SetReadDeadline(time.Time{})
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
			s.smux.closeStream(sms)
		}
		s.forget(st)
		return nil, refusedBy(fmt.Errorf("mux: opening a smux stream: %w", err))
	}
	st.sm = sms
	st.opened.Store(true)
	// Only now: a refusal that came already fails the stream's writes,
	// not the writing of its type.
	s.smux.attach(st)
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

// smuxWrite writes p, one writer at a time, as the native engine does
// (and as smuxPeerGone relies on).
func (st *Stream) smuxWrite(p []byte) (int, error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if st.smuxPeerClosed.Load() {
		return 0, st.smuxWriteErr(errSmuxPeerClosed)
	}
	if st.in && !st.smuxStatusDone.Load() {
		return st.smuxWriteFirstLocked(p)
	}
	n, err := st.sm.Write(p)
	return n, st.smuxWriteErr(err)
}

// smuxWriteFirstLocked writes an accepted stream's first bytes behind its
// admission status. The caller holds writeMu.
func (st *Stream) smuxWriteFirstLocked(p []byte) (int, error) {
	b := make([]byte, 1+len(p))
	b[0] = smuxAdmitted
	copy(b[1:], p)
	n, err := st.sm.Write(b)
	st.smuxStatusDone.Store(true)
	return max(n-1, 0), st.smuxWriteErr(err)
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
		// The status came before the peer's FIN: reading it waits for
		// nothing.
		if serr := st.smuxReadStatus(); errors.Is(serr, ErrRefused) {
			return serr
		}
	}
	return errSmuxPeerClosed
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
	err := st.sess.smux.closeStream(st.sm)
	st.sess.forget(st)
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
