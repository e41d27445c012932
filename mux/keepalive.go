package mux

import "time"

// keepAlive pings the peer when the session has been quiet for
// KeepAliveInterval and ends the session when nothing has arrived, or a
// write has made no progress, for KeepAliveTimeout. Progress is bytes
// leaving, not whole writes completing, so a slow link that the peer reads
// keeps its session however long one batch takes.
func (s *Session) keepAlive() {
	defer s.wg.Done()
	interval, timeout := s.cfg.KeepAliveInterval, s.cfg.KeepAliveTimeout
	tick := time.NewTicker(min(interval, timeout/4))
	defer tick.Stop()
	lastCount, heard, pinged := s.frameCount.Load(), time.Now(), time.Time{}
	for {
		var now time.Time
		select {
		case <-s.done:
			return
		case now = <-tick.C:
		}
		if c := s.frameCount.Load(); c != lastCount {
			lastCount, heard = c, now
		}
		progress := s.progressAt.Load() // a write runs, and last made progress then
		if now.Sub(heard) >= timeout || progress != 0 && now.Sub(time.Unix(0, progress)) >= timeout {
			s.fail(ErrKeepAliveTimeout)
			return
		}
		if now.Sub(heard) >= interval && now.Sub(pinged) >= interval {
			pinged = now
			s.sendPing(0, false)
		}
	}
}
