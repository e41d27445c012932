package mux

import (
	"context"
	"slices"
)

// The peer's new streams go to the application in one of two ways: they
// wait in a queue for AcceptType, or HandleType serves each as it comes.

// Accept waits for the peer's next stream of TypeDefault. See AcceptType.
func (s *Session) Accept(ctx context.Context) (*Stream, error) {
	return s.AcceptType(ctx, TypeDefault)
}

// AcceptType waits for the peer's next stream of type t, until ctx is done or
// the session ends. Streams wait to be accepted in the order they arrived;
// they count toward MaxIncomingStreams meanwhile.
func (s *Session) AcceptType(ctx context.Context, t StreamType) (*Stream, error) {
	s.mu.Lock()
	ready := s.acceptors[t]
	if ready == nil {
		ready = make(chan struct{}, 1)
		s.acceptors[t] = ready
	}
	for {
		if st := s.takePendingLocked(t); st != nil {
			s.mu.Unlock()
			return st, nil
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
// streams one by one in a loop, and the goroutine hop of that loop.
func (s *Session) HandleType(t StreamType, handle func(*Stream)) {
	s.mu.Lock()
	if s.handlers == nil {
		s.handlers = make(map[StreamType]func(*Stream))
	}
	s.handlers[t] = handle
	var waiting []*Stream
	for st := s.takePendingLocked(t); st != nil; st = s.takePendingLocked(t) {
		waiting = append(waiting, st)
	}
	s.mu.Unlock()
	for _, st := range waiting {
		go handle(st)
	}
}

// admitLocked queues a new incoming stream for AcceptType, or returns the
// handler that HandleType set for its type.
func (s *Session) admitLocked(st *Stream) func(*Stream) {
	if handle := s.handlers[st.typ]; handle != nil {
		st.accepted = true
		return handle
	}
	s.pending = append(s.pending, st)
	if ready := s.acceptors[st.typ]; ready != nil {
		signal(ready)
	}
	return nil
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
	st.accepted = true
	if st.endedPending { // finished while queued; now the application has it
		s.numIn--
		s.checkDrainedLocked()
	}
	if slices.ContainsFunc(s.pending[i:], func(o *Stream) bool { return o.typ == t }) {
		signal(s.acceptors[t])
	}
	return st
}
