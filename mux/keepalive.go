package mux

import "time"

// startTimer runs tick after d, and again after each delay tick returns,
// until it returns 0 or the session ends. A timer, not a goroutine, waits
// meanwhile, so that an idle session costs no goroutine for it; each run
// has a goroutine of its own, counted in s.wg so that Close and Kill wait
// for it, and none starts once the session has ended (fail stops the
// timers, under mu, as it ends the session). Runs never overlap: the
// next is armed only once one is over.
func (s *Session) startTimer(d time.Duration, tick func() time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			return
		}
		s.wg.Add(1) // before fail, so before any wg.Wait: see Close and Kill
		s.mu.Unlock()
		defer s.wg.Done()
		next := tick()
		s.mu.Lock()
		if next > 0 && s.err == nil {
			t.Reset(next)
		}
		s.mu.Unlock()
	})
	s.timers = append(s.timers, t)
}

// stopTimersLocked stops the session's timers, which must not run once it
// has ended.
func (s *Session) stopTimersLocked() {
	for _, t := range s.timers {
		t.Stop()
	}
	s.timers = nil
}

// startKeepAlive pings the peer when nothing has been received, or nothing
// sent, for KeepAliveInterval, and ends the session when, for
// KeepAliveTimeout, nothing has been received and the peer has not drained
// a congested connection, or a write has made no progress. It looks every
// quarter interval, so a ping leaves at most that late. Progress is bytes
// leaving, not whole writes completing, and bytes that leave a congested
// connection prove that the peer reads: so a slow link keeps its session
// however long one batch takes to cross, even while this side's ping waits
// behind it. A side that only receives pings too, because the peer cannot
// always see its bytes drain: on a slow link they may wait in a buffer
// beyond the peer's socket (a router's), and the peer hears only this
// side's pings until they have crossed. Keepalive's pings carry sequence
// number 0; the answer to the oldest unanswered one gives Stats' LastRTT.
func (s *Session) startKeepAlive() {
	interval, timeout := s.cfg.KeepAliveInterval, s.cfg.KeepAliveTimeout
	var pinged time.Time // runs never overlap, and s.mu orders them
	s.startTimer(interval/4, func() time.Duration {
		now := time.Now()
		heard, drained := time.Unix(0, s.heardAt.Load()), time.Unix(0, s.drainedAt.Load())
		sent := time.Unix(0, s.sentAt.Load())
		progress := s.progressAt.Load() // a write runs, and last made progress then
		quiet := now.Sub(heard) >= timeout && now.Sub(drained) >= timeout
		if quiet || progress != 0 && now.Sub(time.Unix(0, progress)) >= timeout {
			s.fail(ErrKeepAliveTimeout)
			return 0
		}
		if (now.Sub(heard) >= interval || now.Sub(sent) >= interval) && now.Sub(pinged) >= interval {
			pinged = now
			s.keepAliveAt.CompareAndSwap(0, now.UnixNano()) // an older ping unanswered keeps its time
			s.sendPing(0, false)
		}
		return interval / 4
	})
}
