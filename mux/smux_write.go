package mux

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"
)

// How the Smux transport batches smux's writes. smux writes every frame
// with a conn.Write of its own, from its one sending goroutine, and the
// stream that queued the frame waits for that write: a call cost seven
// write syscalls, each waking the peer's reader. Once the session is
// established, smuxConn.Write only appends the frame to a buffer, and
// smuxFlusher writes what has gathered there in one conn.Write: frames
// that smux sends while a write is under way go out together in the
// next. Frames leave in the order smux wrote them.
//
// A frame is on its way, not yet on the connection, when smux's Write
// returns. The session's graceful Close counts on a stream's bytes having
// left once the stream has ended, since it then half-closes the
// connection; so a stream's end is counted (Session.forget) only once its
// bytes and its FIN are on the connection (see smuxFlusher.after), and
// Close never waits for the connection itself.

// smuxWriteBacklog bounds what smux may have written that is not yet on
// the connection: one full frame. Past it, smux's sending goroutine waits,
// as in a conn.Write on a full socket, and so do the Writes of streams,
// which then fail at their deadlines as before.
const smuxWriteBacklog = 64 << 10

// smuxFlushCap is the most a flusher's buffer holds: just under the
// backlog, and then one more frame of at most 64 KiB. Its buffers grow to
// what the session's bursts need, up to that, and are kept.
const smuxFlushCap = smuxWriteBacklog + smuxHeaderLen + 65535

// smuxFlusher is the write side of a smuxConn once the session is
// established.
type smuxFlusher struct {
	conn net.Conn
	sess *Session

	mu      sync.Mutex
	cond    sync.Cond // signalled when bytes leave, or the flusher stops
	buf     []byte    // written by smux, not yet taken by run
	spare   []byte    // the buffer run last wrote, for reuse
	queued  uint64    // bytes smux has written since the flusher started
	sent    uint64    // of them, bytes written to the connection, or lost with it
	err     error     // why no more can be written
	waiting bool      // run waits for bytes
	writing bool      // run is in a write to the connection
	kick    chan struct{}
	ends    []smuxEnd // streams' ends to count once their bytes are sent, in order of mark
}

// smuxEnd is a stream's end, to be counted once the first mark bytes
// queued are on the connection: the stream is forgotten, or, for a
// WriteLast on a stream the peer opened, which forgot it before, the last
// write is done. With sent set instead of st, it is a Session.Flush
// waiting for those bytes, and sent is closed.
type smuxEnd struct {
	mark uint64
	st   *Stream
	last bool
	sent chan struct{}
}

// do counts the end.
func (e smuxEnd) do() {
	if e.sent != nil {
		close(e.sent)
		return
	}
	s := e.st.sess
	if !e.last {
		s.forget(e.st)
		return
	}
	s.mu.Lock()
	s.lastWrites--
	s.checkDrainedLocked()
	s.mu.Unlock()
}

// after counts e's end once the bytes queued so far are on the connection
// or can no longer be; at once if they are.
func (f *smuxFlusher) after(e smuxEnd) {
	f.mu.Lock()
	e.mark = f.queued
	if f.sent < e.mark && f.err == nil {
		f.ends = append(f.ends, e)
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	e.do()
}

// sentSoFar returns a channel closed once the bytes queued so far are on
// the connection, or can no longer be.
func (f *smuxFlusher) sentSoFar() <-chan struct{} {
	sent := make(chan struct{})
	f.after(smuxEnd{sent: sent})
	return sent
}

// takeEndsLocked removes the ends whose bytes are sent, or all of them
// once nothing more can be sent, and returns them appended to dst[:0].
func (f *smuxFlusher) takeEndsLocked(dst []smuxEnd) []smuxEnd {
	i := 0
	for i < len(f.ends) && (f.ends[i].mark <= f.sent || f.err != nil) {
		i++
	}
	dst = append(dst[:0], f.ends[:i]...)
	n := copy(f.ends, f.ends[i:])
	clear(f.ends[n:]) // keeps no stream alive
	f.ends = f.ends[:n]
	return dst
}

// newSmuxFlusher returns the flusher of s's connection conn, and starts
// it.
func newSmuxFlusher(conn net.Conn, s *Session) *smuxFlusher {
	f := &smuxFlusher{conn: conn, sess: s, kick: make(chan struct{}, 1)}
	f.cond.L = &f.mu
	s.wg.Add(1)
	go f.run()
	return f
}

// write queues p, which smux may reuse once write returns; it waits while
// the backlog is full. It fails once the connection has failed, or the
// session has ended.
func (f *smuxFlusher) write(p []byte) (int, error) {
	f.mu.Lock()
	for len(f.buf) >= smuxWriteBacklog && f.err == nil {
		f.cond.Wait()
	}
	if f.err != nil {
		err := f.err
		f.mu.Unlock()
		return 0, err
	}
	if need := len(f.buf) + len(p); need > cap(f.buf) {
		b := make([]byte, len(f.buf), min(max(need, 2*cap(f.buf), 4<<10), max(need, smuxFlushCap)))
		copy(b, f.buf)
		f.buf = b
	}
	f.buf = append(f.buf, p...)
	f.queued += uint64(len(p))
	wake := f.waiting
	f.waiting = false
	f.mu.Unlock()
	if wake {
		f.kick <- struct{}{}
	}
	return len(p), nil
}

// failure returns the error a write to the connection failed with, or
// nil; the flusher's stop at the session's end is none. The reader asks
// when it meets the end of input, which a peer's reset gives it once a
// write has taken the reset's error: a write still under way is awaited
// first, for at most writeSettle, since it may be that write, not yet
// back to record its failure.
func (f *smuxFlusher) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writing {
		settled := false
		t := time.AfterFunc(writeSettle, func() {
			f.mu.Lock()
			settled = true
			f.cond.Broadcast()
			f.mu.Unlock()
		})
		for f.writing && !settled {
			f.cond.Wait() // run signals cond when its write is back
		}
		t.Stop()
	}
	if f.err == nil || errors.Is(f.err, ErrSessionClosed) {
		return nil
	}
	return f.err
}

// stop ends the flusher: what is still queued is dropped, writes fail
// with err, and the ends waiting for bytes to leave are counted. The
// session's end calls it, with no lock held.
func (f *smuxFlusher) stop(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	wake := f.waiting
	f.waiting = false
	f.cond.Broadcast()
	ends := f.takeEndsLocked(nil)
	f.mu.Unlock()
	if wake {
		f.kick <- struct{}{}
	}
	for _, e := range ends {
		e.do()
	}
}

// writeSettle bounds how long the reader, at the end of input, waits for
// a write under way to come back: a write on a connection the peer reset
// returns at once, and one the peer's half-close left blocked on a full
// socket is not worth more.
const writeSettle = 100 * time.Millisecond

// run writes what smux queues, all that has gathered at a time, until the
// flusher stops or a write fails, which ends the session.
func (f *smuxFlusher) run() {
	defer f.sess.wg.Done()
	var ends []smuxEnd // reused for each write's ends
	for {
		f.mu.Lock()
		for len(f.buf) == 0 && f.err == nil {
			f.waiting = true
			f.mu.Unlock()
			<-f.kick
			// Let the goroutines the kick found running go on first:
			// smux's sender, and the stream it answered, are usually a
			// frame away from the next one (the data after a SYN, the
			// FIN after a response), which then leaves in the same
			// write. Measured on a unary call: 6.3 write syscalls -> 2.2,
			// and a third less time; ping-pong and bulk unchanged.
			runtime.Gosched()
			f.mu.Lock()
		}
		if f.err != nil {
			f.mu.Unlock()
			return
		}
		b := f.buf
		f.buf = f.spare[:0]
		f.writing = true
		f.cond.Broadcast() // room in the backlog
		f.mu.Unlock()

		n, err := f.conn.Write(b)
		f.sess.bytesSent.Add(uint64(n))

		f.mu.Lock()
		f.writing = false
		f.spare = b[:0]
		f.sent += uint64(len(b))
		if err != nil && f.err == nil {
			f.err = err
		}
		f.cond.Broadcast()
		ends = f.takeEndsLocked(ends)
		f.mu.Unlock()
		for i, e := range ends {
			e.do()
			ends[i] = smuxEnd{} // no stream is kept alive by the reused slice
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) { // a local close: the session says why
				// Not at once: smux reads on, as writeFailed says why.
				f.sess.writeFailed(err)
			}
			return
		}
	}
}
