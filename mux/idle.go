package mux

import "time"

// startIdleWatch starts watchIdle if Config.IdleTimeout asks for it.
func (s *Session) startIdleWatch() {
	if s.cfg.IdleTimeout > 0 {
		s.wg.Add(1)
		go s.watchIdle()
	}
}

// markActive notes, for IdleTimeout, that a stream has just ended; a
// session without IdleTimeout spends nothing on it.
func (s *Session) markActive() {
	if s.cfg.IdleTimeout > 0 {
		s.activeAt.Store(now())
	}
}

// watchIdle ends the session, as Close does, once no stream has been open
// for IdleTimeout: none is open now, and none has ended since. The streams
// are counted as NumStreams counts them. A stream the peer opens as the
// session closes is served, or refused as after any GoAway.
func (s *Session) watchIdle() {
	defer s.wg.Done()
	timeout := s.cfg.IdleTimeout
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-timer.C:
		}
		next := timeout
		if s.NumStreams() == 0 {
			idle := time.Since(time.Unix(0, s.activeAt.Load()))
			if idle >= timeout {
				// Not in this goroutine: closeWith waits for it to exit.
				go s.closeWith(ErrIdleTimeout, []byte("idle timeout"))
				return
			}
			next = timeout - idle
		}
		timer.Reset(next)
	}
}
