package mux

import (
	"context"
	"slices"
)

// The peer's new streams go to the application in one of two ways: they
// wait in a queue for AcceptType, or HandleType serves each as it comes.
// Either way, at most MaxIncomingStreams of them are the application's at
// once: a stream is handed over only while fewer are held, and one is held
// until the application lets it go (its handler returns, or, for an
// accepted stream, Close or Reset is called), even if the peer has ended or
// reset it meanwhile. So a peer that opens and resets streams quickly
// cannot make this side run more handlers than the limit; its further
// streams wait in the queue, and past the limit the queue refuses them.

// Accept waits for the peer's next stream of TypeDefault. See AcceptType.
func (s *Session) Accept(ctx context.Context) (*Stream, error) {
	return s.AcceptType(ctx, TypeDefault)
}

// AcceptType waits for the peer's next stream of type t, until ctx is done or
// the session ends. Streams wait to be accepted in the order they arrived;
// they count toward MaxIncomingStreams meanwhile. While the application
// holds MaxIncomingStreams accepted streams that it has not closed,
// AcceptType waits for one of them to be closed.
func (s *Session) AcceptType(ctx context.Context, t StreamType) (*Stream, error) {
	s.mu.Lock()
	ready := s.acceptors[t]
	if ready == nil {
		ready = make(chan struct{}, 1)
		s.acceptors[t] = ready
	}
	for {
		if s.numHeld < s.cfg.MaxIncomingStreams {
			if st := s.takePendingLocked(t); st != nil {
				s.mu.Unlock()
				return st, nil
			}
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-ready:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
	}
}

// HandleType has handle serve every stream of type t that the peer opens,
// each on a goroutine of its own, started once the stream's first frame has
// arrived. Streams of type t already waiting for an accept go to handle
// too, and AcceptType(t) gets none from then on. It saves accepting
// streams one by one in a loop, and the goroutine hop of that loop. A
// stream counts toward MaxIncomingStreams until its handler has returned.
func (s *Session) HandleType(t StreamType, handle func(*Stream)) {
	s.mu.Lock()
	if s.handlers == nil {
		s.handlers = make(map[StreamType]func(*Stream))
	}
	s.handlers[t] = handle
	start := s.dispatchLocked()
	s.mu.Unlock()
	s.startHandlers(start)
}

// chargeLocked counts a new incoming stream toward MaxIncomingStreams,
// until the session forgets it.
func (s *Session) chargeLocked(st *Stream) {
	st.inTable = true
	s.numIn++
	s.numLive++
}

// admitLocked hands a new incoming stream, charged already, to the
// application: it returns the handler to run it with at once, or nil when
// the stream is queued for an accept or for a free handler slot.
func (s *Session) admitLocked(st *Stream) func(*Stream) {
	handle := s.handlers[st.typ]
	if handle != nil && s.numHeld < s.cfg.MaxIncomingStreams && !s.handledPendingLocked() {
		st.handled = true
		s.holdLocked(st)
		return handle
	}
	s.pending = append(s.pending, st)
	if ready := s.acceptors[st.typ]; ready != nil && s.numHeld < s.cfg.MaxIncomingStreams {
		signal(ready)
	}
	return nil
}

// refuseLocked reports whether a new incoming stream must be refused: the
// peer has MaxIncomingStreams streams open, or twice as many wait for the
// application. The queue has room beyond the peer's limit for streams the
// peer has finished (their request sent, then closed) while the
// application still had its fill, so that a client that closes each
// stream before the server is done with it is not refused; it is bounded,
// so that a peer cannot pile up finished streams faster than the
// application takes them.
func (s *Session) refuseLocked() bool {
	return s.numIn >= s.cfg.MaxIncomingStreams || len(s.pending) >= 2*s.cfg.MaxIncomingStreams
}

// handledPendingLocked reports whether a stream of a handled type waits
// for a handler slot, so that a newer one must queue behind it.
func (s *Session) handledPendingLocked() bool {
	return slices.ContainsFunc(s.pending, func(st *Stream) bool { return s.handlers[st.typ] != nil })
}

// holdLocked counts st as the application's.
func (s *Session) holdLocked(st *Stream) {
	st.app = appHeld
	s.numHeld++
}

// takePendingLocked removes and returns the oldest pending stream of type
// t, leaving the type's token for another acceptor if more are pending.
func (s *Session) takePendingLocked(t StreamType) *Stream {
	i := slices.IndexFunc(s.pending, func(st *Stream) bool { return st.typ == t })
	if i < 0 {
		return nil
	}
	st := s.pending[i]
	s.pending = slices.Delete(s.pending, i, i+1)
	s.holdLocked(st)
	if slices.ContainsFunc(s.pending[i:], func(o *Stream) bool { return o.typ == t }) {
		signal(s.acceptors[t])
	}
	return st
}

// dispatchLocked hands queued streams to the application while it holds
// fewer than MaxIncomingStreams: streams of handled types are returned,
// for startHandlers, and acceptors of the other types are woken.
func (s *Session) dispatchLocked() []*Stream {
	var start []*Stream
	for i := 0; i < len(s.pending) && s.numHeld < s.cfg.MaxIncomingStreams; {
		st := s.pending[i]
		if s.handlers[st.typ] == nil {
			if ready := s.acceptors[st.typ]; ready != nil {
				signal(ready)
			}
			i++
			continue
		}
		s.pending = slices.Delete(s.pending, i, i+1)
		st.handled = true
		s.holdLocked(st)
		start = append(start, st)
	}
	return start
}

// startHandlers runs the handlers of streams dispatchLocked returned.
func (s *Session) startHandlers(start []*Stream) {
	for _, st := range start {
		s.mu.Lock()
		handle := s.handlers[st.typ]
		s.mu.Unlock()
		go s.serve(st, handle)
	}
}

// serve runs a handled stream's handler, and lets the stream go when it
// returns.
func (s *Session) serve(st *Stream, handle func(*Stream)) {
	defer s.letGo(st)
	handle(st)
}

// release lets an accepted stream go, for its Close or Reset. A handled
// stream is let go when its handler returns instead.
func (s *Session) release(st *Stream) {
	if !st.in {
		return
	}
	s.mu.Lock()
	handled := st.handled
	s.mu.Unlock()
	if !handled {
		s.letGo(st)
	}
}

// letGo ends the application's hold on an incoming stream, and hands the
// freed place to the next queued stream.
func (s *Session) letGo(st *Stream) {
	s.mu.Lock()
	if st.app != appHeld {
		s.mu.Unlock()
		return
	}
	st.app = appReleased
	s.numHeld--
	if !st.inTable {
		s.numLive--
		s.markActive()
	}
	start := s.dispatchLocked()
	s.mu.Unlock()
	s.startHandlers(start)
}
