package mux

import "time"

// startIdleWatch ends the session, as Close does, once no stream has been
// open for Config.IdleTimeout, if it is set: none is open now, and none
// has ended since. The streams are counted as NumStreams counts them. A
// stream the peer opens as the session closes is served, or refused as
// after any GoAway.
func (s *Session) startIdleWatch() {
	timeout := s.cfg.IdleTimeout
	if timeout <= 0 {
		return
	}
	s.startTimer(timeout, func() time.Duration {
		if s.NumStreams() > 0 {
			return timeout
		}
		idle := time.Since(time.Unix(0, s.activeAt.Load()))
		if idle < timeout {
			return timeout - idle
		}
		// Not in this run: closeWith waits for it to end.
		go s.closeWith(ErrIdleTimeout, []byte("idle timeout"))
		return 0
	})
}

// markActive notes, for IdleTimeout, that a stream has just ended; a
// session without IdleTimeout spends nothing on it.
func (s *Session) markActive() {
	if s.cfg.IdleTimeout > 0 {
		s.activeAt.Store(now())
	}
}
