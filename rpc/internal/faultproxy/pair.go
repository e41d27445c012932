package faultproxy

import (
	"errors"
	"io"
	"net"
	"time"
)

// A pair is one proxied connection: the client's socket and the target's,
// and a pump forwarding toward each. Its fields after conns are guarded by
// the proxy's mu.
type pair struct {
	p     *Proxy
	conns [2]*net.TCPConn // by end: clientEnd, targetEnd

	cut     [2]CutMode // how each end was cut; 0: it was not
	closed  [2]bool    // the socket is closed
	reading [2]bool    // a goroutine reads from the socket: the pump toward the other end, or a drain
	running int        // pumps still running
}

// cutLocked cuts end e by mode, unless it was cut or closed already.
func (pr *pair) cutLocked(mode CutMode, e int) {
	if pr.cut[e] != 0 || pr.closed[e] {
		return
	}
	pr.cut[e] = mode
	c := pr.conns[e]
	switch mode {
	case RST:
		c.SetLinger(0)
		c.Close()
		pr.closed[e] = true
	case FIN:
		c.CloseWrite()
		if !pr.reading[e] { // nobody will see the peer's end: drain it here
			pr.reading[e] = true
			pr.p.wg.Add(1)
			go pr.drain(e)
		}
	}
}

// drain reads and drops what end e's peer sends until it closes (or the
// proxy does), then closes the socket: the end of a FIN cut whose pump had
// already stopped reading.
func (pr *pair) drain(e int) {
	defer pr.p.wg.Done()
	_, err := io.Copy(io.Discard, pr.conns[e])
	pr.p.mu.Lock()
	defer pr.p.mu.Unlock()
	pr.reading[e] = false
	pr.readEndedLocked(e, err)
	pr.settleLocked()
}

// action is what a pump does with the bytes it has read.
type action uint8

const (
	forward action = iota
	drop           // its source was cut with FIN: read and drop until the peer closes
	stop           // stop reading: its destination was cut, or the proxy closed
)

// actionLocked returns what the pump toward dst does next, waiting while
// the link toward dst is silent.
func (pr *pair) actionLocked(dst int) action {
	src := 1 - dst
	for {
		switch {
		case pr.cut[src] == FIN:
			return drop
		case pr.p.closed || pr.cut[src] != 0 || pr.cut[dst] != 0 || pr.closed[dst]:
			return stop
		case !pr.p.way[dst].silent:
			return forward
		}
		pr.p.change.Wait()
	}
}

// pump forwards what end 1-dst's peer sends to end dst, piece by piece
// when split is not nil, until either end is cut or closed.
func (pr *pair) pump(dst int, split Splitter) {
	defer pr.p.wg.Done()
	src := 1 - dst
	in := pr.conns[src]
	p := pr.p
	buf := make([]byte, 32<<10)
	var err error
	for {
		p.mu.Lock()
		chunk := len(buf)
		if b := p.way[dst].bucket; b != nil {
			chunk = min(chunk, b.burst)
		}
		p.mu.Unlock()
		var n int
		n, err = in.Read(buf[:chunk])
		if n > 0 && !pr.forward(dst, split, buf[:n]) {
			err = nil
			break
		}
		if err != nil {
			break
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		// The end of the peer's bytes is news too: a silent link holds it
		// back like them.
		pr.actionLocked(dst)
	}
	pr.reading[src] = false
	pr.running--
	if err != nil {
		pr.readEndedLocked(src, err)
	}
	pr.settleLocked()
}

// forward writes data to end dst, in the pieces split chooses, as fast as
// the link's bucket allows. It reports whether the pump should read on.
func (pr *pair) forward(dst int, split Splitter, data []byte) bool {
	p := pr.p
	out := pr.conns[dst]
	for len(data) > 0 {
		p.mu.Lock()
		act := pr.actionLocked(dst)
		way := p.way[dst]
		p.mu.Unlock()
		switch act {
		case drop:
			return true
		case stop:
			return false
		}
		k := len(data)
		if split != nil {
			k = min(max(split.Next(data), 1), len(data))
		}
		if way.bucket != nil {
			k = min(k, way.bucket.burst)
			if !p.sleep(way.bucket.reserve(k)) {
				return false
			}
		}
		n, err := out.Write(data[:k])
		p.mu.Lock()
		p.stats[dst].Bytes += int64(n)
		p.stats[dst].Writes++
		p.mu.Unlock()
		if err != nil {
			// A cut, a close, or the peer gone: in the last case the pump
			// reading from it sees the reset and passes it on.
			return false
		}
		data = data[k:]
		if split != nil && way.gap > 0 && !p.sleep(way.gap) {
			return false
		}
	}
	return true
}

// sleep waits for d, or until the proxy closes; it reports false if the
// proxy closed.
func (p *Proxy) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	}
}

// readEndedLocked handles the end of reading from end e, with err: passes
// a peer's half-close or reset on to the other end, or closes e after a
// FIN cut has been drained.
func (pr *pair) readEndedLocked(e int, err error) {
	other := 1 - e
	switch {
	case pr.p.closed || pr.closed[e]:
	case pr.cut[e] == FIN: // the peer has closed its end too
		pr.conns[e].Close()
		pr.closed[e] = true
	case pr.cut[e] != 0 || pr.cut[other] != 0 || pr.closed[other]:
	case errors.Is(err, io.EOF):
		pr.conns[other].CloseWrite()
	case !isClosed(err):
		pr.conns[other].SetLinger(0)
		pr.conns[other].Close()
		pr.closed[other] = true
	}
}

// settleLocked closes the pair once nothing forwards on it any more,
// except an end left open by a cut of the other (it stays silent until the
// proxy closes), and forgets it once both its sockets are closed.
func (pr *pair) settleLocked() {
	if pr.running == 0 && !pr.reading[clientEnd] && !pr.reading[targetEnd] {
		held := pr.cut[clientEnd] != pr.cut[targetEnd] && (pr.cut[clientEnd] == 0 || pr.cut[targetEnd] == 0)
		for e, c := range pr.conns {
			if !pr.closed[e] && !(held && pr.cut[e] == 0) {
				c.Close()
				pr.closed[e] = true
			}
		}
	}
	if pr.closed[clientEnd] && pr.closed[targetEnd] {
		delete(pr.p.pairs, pr)
	}
}
