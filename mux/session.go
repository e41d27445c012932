package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"
)

// StreamType separates the protocols that share a session: a stream opened
// with one type is accepted only by an accept for that type.
type StreamType uint32

const (
	// TypeDefault is the type of streams from Open, accepted by Accept.
	TypeDefault StreamType = 0
	// TypeNet is the type of streams from DialContext, accepted by a
	// NetListener(TypeNet).
	TypeNet StreamType = 1
)

// sendBufferLimit is how many bytes of data frames may wait in the send
// buffer before writers wait for the flusher; controlBufferLimit is how far
// control frames (answers to the peer) may go beyond it before the session
// decides the peer is not reading.
const (
	sendBufferLimit    = 512 << 10
	controlBufferLimit = sendBufferLimit + 1<<20
	readBufferSize     = 32 << 10
)

// A Session carries many streams over one connection. Either side opens
// streams and accepts the other side's. All methods are safe for concurrent
// use.
type Session struct {
	conn   net.Conn
	cfg    Config
	client bool
	peer   settings      // what the peer announced in the handshake
	br     *bufio.Reader // the reader goroutine's, after the handshake
	smux   *smux.Session // set on the Smux transport, which uses nothing below

	// Send path: frames are appended to wbuf and one flusher at a time
	// writes it out, inline in the sender's goroutine or in writeLoop.
	wmu       sync.Mutex
	wroom     sync.Cond // signalled when a flush drained wbuf
	wbuf      []byte
	wspare    []byte
	flushing  bool
	wwaiters  int
	wfailed   bool          // the connection failed while writing
	kick      chan struct{} // wakes writeLoop
	flushedAt atomic.Int64  // unix nanos when the running write began; 0 when idle

	// Stream table and session state.
	mu          sync.Mutex
	streams     map[uint32]*Stream
	nextID      uint32
	lastPeerID  uint32
	numIn       int
	numOut      int
	slotFreed   chan struct{}                // closed when an outgoing slot frees, if anyone waits
	drained     chan struct{}                // closed when the last stream ends, if Close waits
	pending     []*Stream                    // incoming streams not yet accepted
	acceptors   map[StreamType]chan struct{} // per accepted type: a token while pending may hold one
	handlers    map[StreamType]func(*Stream) // per handled type, see HandleType
	serveNow    *Stream                      // the reader's: a new stream for readLoop to serve itself
	relay       chan struct{}                // hands the reading to an idle goroutine, see readLoop
	idleReaders atomic.Int32
	goAwaySent  *GoAwayError
	goAwayRecv  *GoAwayError
	closing     bool
	pings       map[uint64]chan struct{}
	pingSeq     uint64
	frameCount  atomic.Uint64 // frames received, for keepalive
	done        chan struct{}
	err         error // why the session ended; set once before done closes
	wg          sync.WaitGroup
	closeCalled atomic.Bool
}

// Client starts the client side of a session on conn: it exchanges prefaces
// with the server and returns when the session is ready. A nil cfg means the
// defaults. The session owns conn from then on.
func Client(conn net.Conn, cfg *Config) (*Session, error) {
	return newSession(context.Background(), conn, cfg, true)
}

// Server starts the server side of a session on conn, as Client does for
// the client side.
func Server(conn net.Conn, cfg *Config) (*Session, error) {
	return newSession(context.Background(), conn, cfg, false)
}

func newSession(ctx context.Context, conn net.Conn, cfg *Config, client bool) (*Session, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &Session{
		conn:      conn,
		cfg:       c,
		client:    client,
		kick:      make(chan struct{}, 1),
		relay:     make(chan struct{}),
		streams:   make(map[uint32]*Stream),
		acceptors: make(map[StreamType]chan struct{}),
		pings:     make(map[uint64]chan struct{}),
		done:      make(chan struct{}),
		nextID:    2,
	}
	if client {
		s.nextID = 1
	}
	s.wroom.L = &s.wmu
	if c.Transport == Smux {
		s, err := newSmuxSession(ctx, conn, c, client, s)
		if err != nil {
			conn.Close()
		}
		return s, err
	}
	if err := s.handshake(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	s.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()
	if c.KeepAliveInterval > 0 {
		s.wg.Add(1)
		go s.keepAlive()
	}
	return s, nil
}

// Open opens a stream of TypeDefault. See OpenType.
func (s *Session) Open(ctx context.Context) (*Stream, error) {
	return s.OpenType(ctx, TypeDefault)
}

// OpenType opens a stream of type t. It costs no round trip: the peer learns
// of the stream with its first frame. When the peer's stream limit is
// reached, OpenType waits for a free slot until ctx is done, and then fails
// with an error for which IsRetrySafe holds.
func (s *Session) OpenType(ctx context.Context, t StreamType) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, refusedBy(err)
	}
	s.mu.Lock()
	for {
		if err := s.openErrLocked(); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		if s.numOut < int(s.peer.maxIncomingStreams) {
			break
		}
		if s.slotFreed == nil {
			s.slotFreed = make(chan struct{})
		}
		wait := s.slotFreed
		s.mu.Unlock()
		select {
		case <-wait:
		case <-s.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: the peer's limit of %d concurrent streams is reached: %w",
				ErrRefused, s.peer.maxIncomingStreams, ctx.Err())
		}
		s.mu.Lock()
	}
	s.numOut++
	s.mu.Unlock()
	if s.smux != nil {
		return s.smuxOpen(t)
	}
	return newStream(s, 0, t), nil
}

// openErrLocked says why no stream may be opened now, or nil.
func (s *Session) openErrLocked() error {
	switch {
	case s.err != nil:
		return refusedBy(s.err)
	case s.closing:
		return refusedBy(ErrSessionClosed)
	case s.goAwayRecv != nil:
		return refusedBy(s.goAwayRecv)
	}
	return nil
}

// signal puts a token in a one-slot channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Ping sends a ping and returns the round-trip time to the peer's answer.
func (s *Session) Ping(ctx context.Context) (time.Duration, error) {
	if s.smux != nil {
		return 0, fmt.Errorf("mux: Ping: %w", ErrUnsupported)
	}
	answered := make(chan struct{})
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return 0, s.err
	}
	s.pingSeq++
	seq := s.pingSeq
	s.pings[seq] = answered
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pings, seq)
		s.mu.Unlock()
	}()
	start := time.Now()
	s.sendPing(seq, false, true)
	select {
	case <-answered:
		return time.Since(start), nil
	case <-s.done:
		return 0, s.Err()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// GoAway tells the peer that this side will process no stream it has not
// yet seen, with a code and debug data for the peer's Err. Streams already
// seen complete normally; the peer's newer streams fail as never processed.
// This side may still open streams. Only the first GoAway is sent.
func (s *Session) GoAway(code uint32, debug []byte) error {
	if s.smux != nil {
		return fmt.Errorf("mux: GoAway: %w", ErrUnsupported)
	}
	if limit := s.goAwayDebugLimit(); len(debug) > limit {
		return fmt.Errorf("mux: GoAway: %d bytes of debug data exceed the limit of %d", len(debug), limit)
	}
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	if s.goAwaySent != nil {
		s.mu.Unlock()
		return nil
	}
	g := &GoAwayError{Code: code, Debug: append([]byte(nil), debug...), LastStreamID: s.lastPeerID}
	s.goAwaySent = g
	s.mu.Unlock()
	return s.send(appendGoAway(nil, g), true)
}

// goAwayDebugLimit is the most debug data a GOAWAY may carry: the frame
// must fit the peer's MaxFrameSize as well as the control-frame bound.
func (s *Session) goAwayDebugLimit() int {
	return min(maxGoAwayDebug, int(s.peer.maxFrameSize)-8)
}

// Close ends the session gracefully: it sends a GoAway, waits up to
// Config.CloseTimeout for open streams to finish, then closes the
// connection. Streams still open then fail. Close waits for the session's
// goroutines to exit.
func (s *Session) Close() error {
	if s.closeCalled.Swap(true) {
		<-s.done
		s.wg.Wait()
		return nil
	}
	s.mu.Lock()
	s.closing = true
	if s.slotFreed != nil {
		close(s.slotFreed)
		s.slotFreed = nil
	}
	var drained chan struct{}
	if s.numIn+s.numOut > 0 && s.err == nil {
		drained = make(chan struct{})
		s.drained = drained
	}
	s.mu.Unlock()
	s.GoAway(GoAwayNormal, nil)
	if drained != nil {
		t := time.NewTimer(s.cfg.CloseTimeout)
		select {
		case <-drained:
		case <-s.done:
		case <-t.C:
		}
		t.Stop()
	}
	s.wmu.Lock()
	s.flushLocked(true) // the last frames, the GoAway among them
	s.wmu.Unlock()
	s.fail(ErrSessionClosed)
	s.wg.Wait()
	return nil
}

// Kill ends the session at once: the connection is closed and every stream
// fails. It waits for the session's goroutines to exit.
func (s *Session) Kill() error {
	s.closeCalled.Store(true)
	s.fail(ErrSessionClosed)
	s.wg.Wait()
	return nil
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} {
	return s.done
}

// Err says why the session ended: ErrSessionClosed after Close or Kill, a
// *GoAwayError when the peer went away, ErrKeepAliveTimeout, ErrProtocol, or
// the connection's error. It is nil while the session runs.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// NumStreams returns the number of open streams, in both directions.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.numIn + s.numOut
}

// LocalAddr returns the connection's local address.
func (s *Session) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr returns the connection's remote address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Conn returns the connection the session runs on, for inspection (its TLS
// state, say). Reading or writing it breaks the session.
func (s *Session) Conn() net.Conn { return s.conn }

// IsClient reports whether this is the client side of the session.
func (s *Session) IsClient() bool { return s.client }

// fail ends the session with err, unless it has ended already. It never
// takes wmu, so the send path may call it.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if s.goAwayRecv != nil && !errors.Is(err, ErrSessionClosed) && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrKeepAliveTimeout) {
		err = s.goAwayRecv // the peer said why it left
	}
	s.err = err
	close(s.done)
	if s.slotFreed != nil {
		close(s.slotFreed)
		s.slotFreed = nil
	}
	streams := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	if s.smux != nil {
		s.smux.Close()
	}
	s.conn.Close()
	for _, st := range streams {
		st.sessionEnded(err)
	}
	s.wroom.Broadcast()
}

// forget removes a finished stream from the table and frees its slot. An
// incoming stream not yet accepted whose peer ended it cleanly still holds
// what the peer sent, so it stays queued for an accept, and counted toward
// MaxIncomingStreams, until the accept takes it.
func (s *Session) forget(st *Stream) {
	st.mu.Lock()
	deliverable := st.recvEnd
	st.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := st.id.Load(); id != 0 && s.streams[id] == st {
		delete(s.streams, id)
	}
	if st.outgoing() {
		s.numOut--
		if s.slotFreed != nil {
			close(s.slotFreed)
			s.slotFreed = nil
		}
	} else {
		if !st.accepted {
			i := slices.Index(s.pending, st)
			if deliverable && i >= 0 {
				st.endedPending = true
				return
			}
			if i >= 0 {
				s.pending = slices.Delete(s.pending, i, i+1)
			}
		}
		s.numIn--
	}
	s.checkDrainedLocked()
}

// checkDrainedLocked wakes Close when the last stream has ended.
func (s *Session) checkDrainedLocked() {
	if s.numIn+s.numOut == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}
