package mux

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// How the Smux transport follows smux's frames as they pass, for what smux
// does not tell: which streams the peer has closed.

// smuxSession is a session's smux machinery: the smux session, and what
// this package learns of its streams from the frames that pass.
type smuxSession struct {
	*smux.Session
	conn *smuxConn // the connection as smux sees it

	mu      sync.Mutex
	streams map[uint32]smuxEntry // by smux stream id, from SYN until this side closes the stream
	// announcer, while armed, sends the types of the streams this side
	// opened and has not used yet (see announceLater); closed says the
	// session has ended and arms it no more.
	announcer     *time.Timer
	announcerDone func() // ends the session's count of the announcer, if it never runs
	closed        bool
}

// smuxEntry is what is known of a smux stream: this package's Stream, once
// there is one, and whether the peer has closed the stream.
type smuxEntry struct {
	st         *Stream
	peerClosed bool
	peerData   bool // a data frame of the peer's has come: its first bytes are smux's
}

// ownFrame sees each frame this side sends, before it leaves: a stream
// this side opens is tracked before the peer can answer it.
func (t *smuxSession) ownFrame(cmd byte, sid uint32, _ int) {
	if cmd == smuxSYN {
		t.track(sid)
	}
}

// peerFrame sees each frame the peer sends, before smux reads it.
func (t *smuxSession) peerFrame(cmd byte, sid uint32, length int) {
	switch cmd {
	case smuxSYN:
		t.track(sid)
	case smuxFIN:
		t.peerClosed(sid)
	case smuxPSH:
		if length > 0 { // smux skips an empty one
			t.peerData(sid)
		}
	}
}

// peerData records that a data frame of the peer's has come for a stream.
// It is seen before smux reads it, but smux reads it next, without waiting
// for anything else, so a Read of its bytes waits no longer than the
// connection takes to bring them.
func (t *smuxSession) peerData(sid uint32) {
	t.mu.Lock()
	if e, ok := t.streams[sid]; ok && !e.peerData {
		e.peerData = true
		t.streams[sid] = e
	}
	t.mu.Unlock()
}

// hasPeerData reports whether a data frame of the peer's has come for sms.
func (t *smuxSession) hasPeerData(sms *smux.Stream) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.streams[sms.ID()].peerData
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
		e.st.smuxAbort()
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
		st.smuxAbort()
	}
}

// Close closes the smux session, and then aborts every stream this side
// has not closed (see Stream.OnAbort): the session's fail calls it, with
// no lock held.
func (t *smuxSession) Close() error {
	err := t.Session.Close()
	if f := t.conn.fl.Load(); f != nil {
		f.stop(ErrSessionClosed)
	}
	t.mu.Lock()
	t.closed = true
	if t.announcer != nil && t.announcer.Stop() {
		t.announcerDone()
	}
	t.announcer = nil
	var open []*Stream
	for _, e := range t.streams {
		if e.st != nil {
			open = append(open, e.st)
		}
	}
	t.mu.Unlock()
	for _, st := range open {
		st.smuxAbort()
	}
	return err
}

// afterSent counts e's end once what smux has written so far is on the
// connection (see smuxFlusher.after); at once before the session is
// established, when smux writes straight to the connection.
func (t *smuxSession) afterSent(e smuxEnd) {
	if f := t.conn.fl.Load(); f != nil {
		f.after(e)
		return
	}
	e.do()
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
//
// It also buffers what smux reads. smux reads each frame's 8-byte header
// and then its payload with a read of its own, straight from the
// connection: two syscalls for every data frame, one for every other,
// however many frames one segment brought. Through the buffer, one read
// takes all that has arrived (see smuxReadBufferSize).
type smuxConn struct {
	net.Conn
	sess    atomic.Pointer[Session]     // set once the handshake is done
	replay  []byte                      // read by the handshake, for smux to read
	br      *bufio.Reader               // reads the replay, then Conn; smux's receiving goroutine's
	in, out smuxScanner                 // used by smux's receiving and sending goroutines
	fl      atomic.Pointer[smuxFlusher] // set once the session is established: writes go through it
	stats   *Session                    // counts the bytes read and written, for Stats

	// On the client side, the server's first bytes are checked before
	// smux reads them (see checkFirst): checkFirst says they are still to
	// come, and firstErr is what they told of a server that is not smux.
	checkFirst bool
	firstErr   atomic.Pointer[error]
}

// smuxReadBufferSize is the size of a session's read buffer: as the native
// engine's. A read that finds it empty and wants at least as much (a large
// payload) bypasses it.
const smuxReadBufferSize = readBufferSize

// newSmuxConn returns conn as smux is to see it. The read buffer comes
// with smux's first read, once smux has started: on a server, once the
// client's first frames have arrived (see readSmuxHello), so that a
// silent connection costs no buffer.
func newSmuxConn(conn net.Conn, s *Session, client bool) *smuxConn {
	return &smuxConn{Conn: conn, stats: s, checkFirst: client}
}

// Read hands smux what the buffer holds, and follows the frames in it. The
// scanner sees the bytes as smux takes them, not as they arrive, so that
// what it learns of a frame (the peer's FIN, say) is never ahead of what
// smux has processed before that frame.
func (c *smuxConn) Read(p []byte) (int, error) {
	if c.br == nil {
		c.br = bufio.NewReaderSize(smuxRawReader{c}, smuxReadBufferSize)
	}
	n, err := c.br.Read(p)
	c.in.scan(p[:n])
	if err != nil && !errors.Is(err, net.ErrClosed) { // a local close: smuxAcceptLoop says why
		if s := c.sess.Load(); s != nil {
			s.fail(s.connError(err, 0))
		}
	}
	return n, err
}

// smuxRawReader is what a smuxConn's buffer reads from: the handshake's
// replay, then the connection, noting for keepalive that the peer is
// alive, and counting the bytes for Stats.
type smuxRawReader struct{ c *smuxConn }

func (r smuxRawReader) Read(p []byte) (int, error) {
	c := r.c
	if c.checkFirst {
		if err := c.checkFirstBytes(); err != nil {
			return 0, err
		}
	}
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.stats.bytesRecv.Add(uint64(n))
		if s := c.sess.Load(); s != nil {
			s.heardAt.Store(now()) // for keepalive
		}
	}
	return n, err
}

// checkFirstBytes reads the server's first frame header, for smux to read
// from the replay, and fails with what it tells if the server does not
// speak smux: smux itself would report "invalid protocol" only. A server
// that hangs up without sending a byte fails so too (closedBeforePreface).
func (c *smuxConn) checkFirstBytes() error {
	c.checkFirst = false
	var h [smuxHeaderLen]byte
	k, err := io.ReadFull(c.Conn, h[:])
	c.stats.bytesRecv.Add(uint64(k))
	var ferr error
	switch {
	case k > 0 && h[0] != smuxVersion:
		ferr = peerSpeaks(h[:k], Smux, true)
	case k == 0:
		ferr = closedBeforePreface(err)
	}
	if ferr != nil {
		c.firstErr.Store(&ferr)
		return ferr
	}
	c.replay = append(c.replay, h[:k]...)
	if err != nil && k < smuxHeaderLen {
		return err
	}
	return nil
}

// firstBytesError returns the error of a client's handshake that failed
// with err: what the server's first bytes told, if they were not smux's.
func (c *smuxConn) firstBytesError(err error) error {
	if ferr := c.firstErr.Load(); ferr != nil {
		return *ferr
	}
	return err
}

// Write follows the frames smux sends, and writes them: through the
// flusher once the session is established, straight to the connection
// before.
func (c *smuxConn) Write(p []byte) (int, error) {
	c.out.scan(p)
	if f := c.fl.Load(); f != nil {
		return f.write(p)
	}
	n, err := c.Conn.Write(p)
	c.stats.bytesSent.Add(uint64(n))
	return n, err
}

// startSmux starts a smux session on rw.
func startSmux(rw *smuxConn, sc *smux.Config, client bool) (*smux.Session, error) {
	if client {
		return smux.Client(rw, sc)
	}
	return smux.Server(rw, sc)
}

// smuxScanner follows the frames of one direction of a smux connection,
// however the bytes are split, and calls on with each frame's command,
// stream id and payload length.
type smuxScanner struct {
	on   func(cmd byte, sid uint32, length int)
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
		sc.on(sc.hdr[1], binary.LittleEndian.Uint32(sc.hdr[4:]), sc.skip)
	}
}

// smuxAnnounceAfter is how long a stream this side opened may go unused
// before its type is sent alone: the peer closes a stream whose type has
// not come within its handshake timeout, and an opened stream may wait a
// while for its first Write. A stream used sooner sends its type with its
// first bytes, and costs no frame of its own.
func smuxAnnounceAfter(handshakeTimeout time.Duration) time.Duration {
	return min(handshakeTimeout/4, time.Second)
}

// announceLater arms the announcer, unless it is armed: once it fires, it
// sends the type of every stream this side opened that is still unused
// (see smuxAnnounce). One timer serves the session, however many streams
// it opens. The session's goroutine count covers the announcer's run.
func (t *smuxSession) announceLater(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.announcer != nil || t.closed {
		return
	}
	s.wg.Add(1)
	t.announcerDone = s.wg.Done
	t.announcer = time.AfterFunc(smuxAnnounceAfter(s.cfg.HandshakeTimeout), func() {
		defer s.wg.Done()
		t.mu.Lock()
		t.announcer = nil
		var unused []*Stream
		for _, e := range t.streams {
			if st := e.st; st != nil && !st.in && !st.opened.Load() {
				unused = append(unused, st)
			}
		}
		t.mu.Unlock()
		for _, st := range unused {
			st.smuxAnnounce()
		}
	})
}
