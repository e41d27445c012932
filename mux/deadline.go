package mux

import "time"

// deadline is one direction's deadline: expired turns true when it passes.
type deadline struct {
	timer   *time.Timer
	gen     uint64
	expired bool
}

// SetDeadline sets the read and write deadlines, as net.Conn does.
func (st *Stream) SetDeadline(t time.Time) error {
	if st.sm != nil {
		st.smuxReadDeadline.Store(unixNanos(t))
		return st.sm.SetDeadline(t)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.setDeadlineLocked(&st.rdl, t, st.recv == halfOpen)
	st.setDeadlineLocked(&st.wdl, t, st.send == halfOpen)
	return nil
}

// SetReadDeadline sets the deadline for Read, as net.Conn does.
func (st *Stream) SetReadDeadline(t time.Time) error {
	if st.sm != nil {
		st.smuxReadDeadline.Store(unixNanos(t))
		return st.sm.SetReadDeadline(t)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.setDeadlineLocked(&st.rdl, t, st.recv == halfOpen)
	return nil
}

// SetWriteDeadline sets the deadline for Write, as net.Conn does. A write
// that has handed its bytes to the session completes regardless.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	if st.sm != nil {
		return st.sm.SetWriteDeadline(t)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.setDeadlineLocked(&st.wdl, t, st.send == halfOpen)
	return nil
}

// setDeadlineLocked sets one direction's deadline. Once the direction has
// ended, or the stream is closed, no operation waits on it, so no timer is
// started, and a stream nobody uses is not kept alive by one.
func (st *Stream) setDeadlineLocked(d *deadline, t time.Time, open bool) {
	d.stop()
	d.gen++
	d.expired = false
	if t.IsZero() || !open || st.closed {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.expired = true
		st.wakeLocked()
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(wait, func() {
		st.mu.Lock()
		if d.gen == gen {
			d.expired = true
			st.wakeLocked()
		}
		st.mu.Unlock()
	})
}

// stop stops the deadline's timer: its direction has ended, so nobody
// will wait for it.
func (d *deadline) stop() {
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// unixNanos is t in unix nanoseconds, 0 for the zero time.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNanos undoes unixNanos.
func fromUnixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
