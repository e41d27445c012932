package mux

import "time"

// keepAlive pings the peer when nothing has been received, or nothing
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
// side's pings until they have crossed.
func (s *Session) keepAlive() {
	defer s.wg.Done()
	interval, timeout := s.cfg.KeepAliveInterval, s.cfg.KeepAliveTimeout
	tick := time.NewTicker(interval / 4)
	defer tick.Stop()
	var pinged time.Time
	for {
		var now time.Time
		select {
		case <-s.done:
			return
		case now = <-tick.C:
		}
		heard, drained := time.Unix(0, s.heardAt.Load()), time.Unix(0, s.drainedAt.Load())
		sent := time.Unix(0, s.sentAt.Load())
		progress := s.progressAt.Load() // a write runs, and last made progress then
		quiet := now.Sub(heard) >= timeout && now.Sub(drained) >= timeout
		if quiet || progress != 0 && now.Sub(time.Unix(0, progress)) >= timeout {
			s.fail(ErrKeepAliveTimeout)
			return
		}
		if (now.Sub(heard) >= interval || now.Sub(sent) >= interval) && now.Sub(pinged) >= interval {
			pinged = now
			s.sendPing(0, false)
		}
	}
}

// receiver is the connection as the session's reader sees it: every read
// that brings bytes is a sign of life, for keepalive.
type receiver struct{ s *Session }

func (r receiver) Read(p []byte) (int, error) {
	n, err := r.s.conn.Read(p)
	if n > 0 {
		r.s.heardAt.Store(now())
	}
	return n, err
}
