package mux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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
	peer   settings     // what the peer announced in the handshake
	br     *connReader  // the reader goroutine's, after the handshake
	smux   *smuxSession // set on the Smux transport, which uses nothing below

	// Send path (writer.go): frames are appended to wbuf and one flusher
	// at a time writes it out.
	wmu         sync.Mutex
	wbuf        []byte // the open batch
	wspare      []byte
	lane        []byte // control frames that go before the open batch
	laneSpare   []byte
	bufs        *sendBufs     // the holder wbuf, wspare, lane and laneSpare came in while the session has them; nil while they wait in sendBufPool
	rest        []byte        // the unwritten end of a batch handed to writeLoop
	flusher     flusher       // who writes wbuf now
	batch       uint32        // counts the batches taken: the open batch's number
	turnWaiters []*Stream     // writers waiting for a turn in a batch, by priority then arrival
	sent        chan struct{} // closed when everything queued is written, if waitSent waits
	writeErr    error         // the connection failed while writing
	sock        socket
	kick        chan struct{} // wakes writeLoop
	progressAt  atomic.Int64  // unix nanos of the running write's last progress; 0 when none runs
	drainedAt   atomic.Int64  // unix nanos when the peer last drained a congested connection, for keepalive
	sentAt      atomic.Int64  // unix nanos when a batch last went to the connection, for keepalive

	// Stream table and session state.
	mu          sync.Mutex
	streams     map[uint32]*Stream
	nextID      uint32
	lastPeerID  uint32
	numOut      int                          // this side's streams, from OpenType until forgotten
	numIn       int                          // the peer's streams not yet forgotten: its view of the count, see MaxIncomingStreams
	numHeld     int                          // the peer's streams the application has: accepted, or their handler runs
	numLive     int                          // the peer's streams not yet forgotten, or still queued or held
	slotWaiters []*slotWaiter                // OpenType calls waiting for a slot, in order
	lastWrites  int                          // smux: WriteLasts under way on the peer's streams, forgotten before their bytes leave
	drained     chan struct{}                // closed when the last stream ends, if Close waits
	pending     []*Stream                    // incoming streams not yet accepted or handled, in order of arrival
	acceptors   map[StreamType]chan struct{} // per accepted type: a token while pending may hold one
	handlers    map[StreamType]func(*Stream) // per handled type, see HandleType
	serveNow    *Stream                      // the reader's: a new stream for readLoop to serve itself
	goAwaySent  *GoAwayError
	goAwayRecv  *GoAwayError
	protoErr    error // the peer broke the protocol: the session's error, whatever fails while the GOAWAY saying so leaves
	closing     bool
	closeErr    error         // set by a graceful close once its streams are done: the session's error, whatever fails while it lingers
	writeFail   *time.Timer   // set once a write failed: ends the session if the reader has not by then, see writeFailed
	timers      []*time.Timer // keepalive's and IdleTimeout's, see startTimer
	pings       map[uint64]chan struct{}
	pingSeq     uint64
	heardAt     atomic.Int64 // unix nanos when bytes last arrived, for keepalive
	activeAt    atomic.Int64 // unix nanos when a stream last ended, or the session started, for IdleTimeout
	done        chan struct{}
	err         error         // why the session ended; set once before done closes
	afterFuncs  []*afterFunc  // to run once the session has ended, see AfterFunc
	draining    chan struct{} // closed once this side may open no more streams; see Draining
	wg          sync.WaitGroup
	closeCalled atomic.Bool

	// Introspection (stats.go): counted where the bytes meet the
	// connection, one atomic add per read or write, and set where a ping's
	// answer arrives.
	started     time.Time
	bytesSent   atomic.Uint64
	bytesRecv   atomic.Uint64
	keepAliveAt atomic.Int64 // unix nanos when keepalive's unanswered ping left; 0 when none waits
	lastRTT     atomic.Int64 // the round trip of the last ping answered, in nanoseconds
}

// slotWaiter is an OpenType call waiting for a free slot among the peer's
// MaxIncomingStreams. Slots go to waiters in order of arrival.
type slotWaiter struct {
	ready   chan struct{} // closed when granted, or when no slot will come
	granted bool
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
		streams:   make(map[uint32]*Stream),
		acceptors: make(map[StreamType]chan struct{}),
		pings:     make(map[uint64]chan struct{}),
		done:      make(chan struct{}),
		draining:  make(chan struct{}),
		nextID:    2,
		started:   time.Now(),
	}
	s.sock = newSocket(conn, s.progressed, &s.bytesSent)
	s.heardAt.Store(now())
	s.activeAt.Store(now())
	if client {
		s.nextID = 1
	}
	if c.Transport == Smux {
		s, err := newSmuxSession(ctx, conn, c, client, s)
		if err != nil {
			conn.Close()
			return nil, err
		}
		s.startIdleWatch()
		return s, nil
	}
	if err := s.handshake(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	s.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()
	if c.KeepAliveInterval > 0 {
		s.startKeepAlive()
	}
	s.startIdleWatch()
	return s, nil
}

// Open opens a stream of TypeDefault. See OpenType.
func (s *Session) Open(ctx context.Context) (*Stream, error) {
	return s.OpenType(ctx, TypeDefault)
}

// OpenType opens a stream of type t. It costs no round trip: the peer learns
// of the stream with its first frame. When the peer's stream limit is
// reached, OpenType waits for a free slot, in order with other waiting
// openers, until ctx is done, and then fails with an error for which
// IsRetrySafe holds.
func (s *Session) OpenType(ctx context.Context, t StreamType) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, refusedBy(err)
	}
	s.mu.Lock()
	if err := s.openErrLocked(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if s.numOut < int(s.peer.maxIncomingStreams) && len(s.slotWaiters) == 0 {
		s.numOut++
		s.mu.Unlock()
		return s.newOutgoing(t)
	}
	w := &slotWaiter{ready: make(chan struct{})}
	s.slotWaiters = append(s.slotWaiters, w)
	s.mu.Unlock()
	var ctxErr error
	select {
	case <-w.ready:
	case <-ctx.Done():
		ctxErr = ctx.Err()
	}
	s.mu.Lock()
	if w.granted && ctxErr == nil {
		s.mu.Unlock()
		return s.newOutgoing(t)
	}
	if w.granted { // granted as ctx ended: pass the slot on
		s.numOut--
		s.grantSlotsLocked()
	} else if i := slices.Index(s.slotWaiters, w); i >= 0 {
		s.slotWaiters = slices.Delete(s.slotWaiters, i, i+1)
	}
	err := s.openErrLocked()
	s.mu.Unlock()
	if err == nil {
		err = fmt.Errorf("%w: the peer's limit of %d concurrent streams is reached: %w",
			ErrRefused, s.peer.maxIncomingStreams, ctxErr)
	}
	return nil, err
}

// newOutgoing returns a new stream of type t, for which OpenType has taken
// a slot.
func (s *Session) newOutgoing(t StreamType) (*Stream, error) {
	if s.smux != nil {
		return s.smuxOpen(t)
	}
	return newStream(s, 0, t), nil
}

// grantSlotsLocked gives free slots to waiting openers, in order.
func (s *Session) grantSlotsLocked() {
	for len(s.slotWaiters) > 0 && s.numOut < int(s.peer.maxIncomingStreams) {
		w := s.slotWaiters[0]
		s.slotWaiters = slices.Delete(s.slotWaiters, 0, 1)
		w.granted = true
		s.numOut++
		close(w.ready)
	}
}

// wakeSlotWaitersLocked wakes every waiting opener without a slot: the
// session will open no more streams.
func (s *Session) wakeSlotWaitersLocked() {
	for _, w := range s.slotWaiters {
		close(w.ready)
	}
	s.slotWaiters = nil
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

// Draining is closed once this side can open no more streams on the
// session: the peer sent a GoAway, this side began to close it (Close,
// or its stream ids ran out), a write to the connection failed (the
// session reads what the peer sent before it ends), or the session ended. Streams already open
// go on until they end. A client watches it to send new calls over
// another session while this one finishes its last.
func (s *Session) Draining() <-chan struct{} { return s.draining }

// stopOpensLocked closes draining, once.
func (s *Session) stopOpensLocked() {
	select {
	case <-s.draining:
	default:
		close(s.draining)
	}
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
		return 0, fmt.Errorf("mux: Ping: %w", bare{ErrUnsupported})
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
	s.sendPing(seq, false)
	select {
	case <-answered:
		rtt := time.Since(start)
		s.lastRTT.Store(int64(rtt))
		return rtt, nil
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
		return fmt.Errorf("mux: GoAway: %w", bare{ErrUnsupported})
	}
	if limit := s.goAwayDebugLimit(); len(debug) > limit {
		return fmt.Errorf("mux: GoAway: %d bytes of debug data exceed the limit of %d", len(debug), limit)
	}
	return s.goAway(code, debug, nil)
}

// goAway sends this side's first GoAway, after mark, if not nil, has
// changed the session's state under mu: the GoAway is queued in the same
// step as it becomes this side's, and as mark's change (Close's), both
// under wmu. The reader, which refuses the peer's new streams once it
// sees either, queues their RESET(REFUSED) only after the GOAWAY, so the
// peer always reads the GOAWAY first: a refusal it reads before a GOAWAY
// means the stream was refused by a session that lives on (over its
// stream limit, say), and the peer may well send it again there.
func (s *Session) goAway(code uint32, debug []byte, mark func()) error {
	s.wmu.Lock()
	s.mu.Lock()
	if mark != nil {
		mark()
	}
	if s.err != nil || s.goAwaySent != nil {
		err := s.err
		s.mu.Unlock()
		s.wmu.Unlock()
		return err
	}
	g := s.newGoAwayLocked(code, debug)
	s.goAwaySent = g
	s.mu.Unlock()
	if err := s.sendErrLocked(); err != nil {
		s.wmu.Unlock()
		return err
	}
	s.takeBufsLocked()
	s.wbuf = appendGoAway(s.wbuf, g)
	s.flushControlAndUnlock()
	return nil
}

// newGoAwayLocked returns a GoAway of this side's. Its Last-Stream-ID is
// the highest id of the peer's it has seen, and never more than that of a
// GoAway it sent before (PROTOCOL.md §7).
func (s *Session) newGoAwayLocked(code uint32, debug []byte) *GoAwayError {
	last := s.lastPeerID
	if s.goAwaySent != nil {
		last = min(last, s.goAwaySent.LastStreamID)
	}
	return &GoAwayError{Code: code, Debug: append([]byte(nil), debug...), LastStreamID: last}
}

// goAwayDebugLimit is the most debug data a GOAWAY may carry: the frame
// must fit the peer's MaxFrameSize as well as the control-frame bound.
func (s *Session) goAwayDebugLimit() int {
	return min(maxGoAwayDebug, int(s.peer.maxFrameSize)-8)
}

// Close ends the session gracefully: it sends a GoAway, waits up to
// Config.CloseTimeout for open streams to finish and for what is queued to
// be written, then closes the connection. Streams still open then fail.
// Close never waits longer than CloseTimeout for the peer, and waits for
// the session's goroutines to exit.
func (s *Session) Close() error {
	s.closeWith(ErrSessionClosed, nil)
	return nil
}

// closeWith is Close, ending the session with final and sending debug
// in the GoAway.
func (s *Session) closeWith(final error, debug []byte) {
	if s.closeCalled.Swap(true) {
		<-s.done
		s.wg.Wait()
		return
	}
	timeout := time.NewTimer(s.cfg.CloseTimeout)
	defer timeout.Stop()
	var drained chan struct{}
	markClosing := func() {
		s.closing = true
		s.stopOpensLocked()
		s.wakeSlotWaitersLocked()
		if s.numIn+s.numOut+s.lastWrites > 0 && s.err == nil {
			drained = make(chan struct{})
			s.drained = drained
		}
	}
	if s.smux == nil {
		s.goAway(GoAwayNormal, debug, markClosing) // refusals for closing follow the GOAWAY
	} else {
		s.mu.Lock()
		markClosing()
		s.mu.Unlock()
	}
	timedOut := false
	if drained != nil {
		select {
		case <-drained:
		case <-s.done:
		case <-timeout.C:
			timedOut = true
		}
	}
	if !timedOut && s.smux == nil {
		s.waitSent(timeout.C, nil) // the last frames, the GoAway among them
	}
	if !timedOut {
		s.linger(final, timeout.C)
	}
	s.fail(final)
	s.wg.Wait()
}

// lingerTimeout bounds how long a graceful close waits for the peer to
// close its side of the connection; see linger.
const lingerTimeout = 500 * time.Millisecond

// linger half-closes the connection, once this side has sent all it had
// to send, and waits until the session ends, the peer having closed its
// side too, or until lingerTimeout or the close's own timeout. A socket
// closed with input still unread sends the peer a TCP reset instead of
// an end, and a reset makes the peer's kernel discard what the peer has
// not read yet: the last answers of the streams just finished among them.
// The peer's last frames (window updates, pings, the end of its streams)
// may well be on their way as this side closes, so the session reads them
// while it lingers; its error is final whatever that reading meets.
func (s *Session) linger(final error, timeout <-chan time.Time) {
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	s.mu.Lock()
	s.closeErr = final
	s.mu.Unlock()
	if cw.CloseWrite() != nil {
		return
	}
	wait := time.NewTimer(lingerTimeout)
	defer wait.Stop()
	select {
	case <-s.done:
	case <-wait.C:
	case <-timeout:
	}
}

// stopWithIDsExhausted ends the session gracefully once this side has given
// out its last stream id: streams open now complete, and the session's
// error then says why it ended, so that a client reconnects.
func (s *Session) stopWithIDsExhausted() {
	s.closeWith(ErrStreamIDsExhausted, []byte("stream ids exhausted"))
}

// Flush waits until the frames queued so far have been written to the
// connection, ctx is done, or the session ends, and says which: nil,
// ctx's error, or the session's. It lets a caller deliver what it queued,
// a GoAway say, before it Kills the session, waiting on a peer that does
// not read no longer than ctx allows. On the Smux transport it waits for
// what smux has written so far (a stream's Write returns once smux has).
func (s *Session) Flush(ctx context.Context) error {
	if s.smux != nil {
		if f := s.smux.conn.fl.Load(); f != nil {
			select {
			case <-f.sentSoFar():
			case <-s.done:
			case <-ctx.Done():
			}
		}
	} else {
		s.waitSent(nil, ctx.Done())
	}
	if err := s.Err(); err != nil {
		return err
	}
	return ctx.Err()
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

// AfterFunc arranges for f to run in its own goroutine once the session
// has ended (Done is closed, Err says why), or at once if it has already,
// as context.AfterFunc does for a context: no goroutine waits for the end
// meanwhile, so that watching many sessions costs none per session.
// Calling stop stops f from running, and reports whether it did: false if
// f has been started, or stopped already.
func (s *Session) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	s.mu.Lock()
	ended := s.err != nil
	if !ended {
		s.afterFuncs = append(s.afterFuncs, a)
	}
	s.mu.Unlock()
	if ended {
		go f()
	}
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		i := slices.Index(s.afterFuncs, a)
		if i < 0 {
			return false
		}
		s.afterFuncs = slices.Delete(s.afterFuncs, i, i+1)
		return true
	}
}

// afterFunc is a function AfterFunc holds for the session's end. Its
// address tells it from others of the same func.
type afterFunc struct{ f func() }

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

// NumStreams returns the number of open streams, in both directions. A
// stream the peer opened counts until it is finished on the wire and the
// application has let it go (see Config.MaxIncomingStreams).
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.numLive + s.numOut
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

// fail ends the session with err, unless it has ended already. It is
// never called with a lock held: the streams' OnAbort functions run in it.
func (s *Session) fail(err error) {
	if s.smux != nil {
		// Nothing written from now on leaves: the session's end wakes
		// handlers whose last writes would otherwise reach smux, and the
		// connection, before both close below.
		if f := s.smux.conn.fl.Load(); f != nil {
			f.stop(ErrSessionClosed)
		}
	}
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if s.goAwayRecv != nil && !errors.Is(err, ErrSessionClosed) && !errors.Is(err, ErrProtocol) &&
		!errors.Is(err, ErrKeepAliveTimeout) && !errors.Is(err, ErrStreamIDsExhausted) {
		err = s.goAwayRecv // the peer said why it left
	}
	if s.closeErr != nil {
		err = s.closeErr
	}
	if s.protoErr != nil {
		err = s.protoErr
	}
	s.err = err
	if s.writeFail != nil {
		s.writeFail.Stop()
	}
	s.stopTimersLocked()
	close(s.done)
	s.stopOpensLocked()
	s.wakeSlotWaitersLocked()
	streams := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	for _, a := range s.afterFuncs {
		go a.f()
	}
	s.afterFuncs = nil
	s.mu.Unlock()
	if s.smux != nil {
		s.smux.Close()
	}
	s.conn.Close()
	for _, st := range streams {
		st.sessionEnded(err)
	}
}

// forget removes a finished stream from the table and frees its slot: an
// outgoing stream's goes to the next waiting opener, an incoming stream's
// no longer counts toward MaxIncomingStreams. An incoming stream still
// queued for the application stays queued if the peer ended it in order,
// since what it sent is still to be delivered; one the peer aborted first
// is dropped. The stream is forgotten only once its last frame is queued,
// so that the peer, which may forget it on that frame, never finds this
// side counting it when this side's next stream opens.
func (s *Session) forget(st *Stream) {
	st.mu.Lock()
	deliverable := st.recv == halfEnded
	st.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.forgotten {
		return
	}
	st.forgotten = true
	s.markActive()
	if id := st.id.Load(); id != 0 && s.streams[id] == st {
		delete(s.streams, id)
	}
	if st.outgoing() {
		s.numOut--
		s.grantSlotsLocked()
		s.checkDrainedLocked()
		return
	}
	if !st.inTable {
		return
	}
	st.inTable = false
	s.numIn--
	if st.app == appQueued && !deliverable {
		if i := slices.Index(s.pending, st); i >= 0 {
			s.pending = slices.Delete(s.pending, i, i+1)
		}
		st.app = appReleased
	}
	if st.app == appReleased {
		s.numLive--
	}
	s.checkDrainedLocked()
}

// checkDrainedLocked wakes Close when the last stream has ended and the
// last bytes of the peer's streams on smux have left.
func (s *Session) checkDrainedLocked() {
	if s.numIn+s.numOut+s.lastWrites == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}
