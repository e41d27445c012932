package rpc

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
)

// Attackers that speak the session layer by hand over loopback TCP, from
// PROTOCOL.md alone: they send what no Go peer would (streams past the
// announced limit, resets as fast as they open, lying lengths), and count
// what the server answers. A goroutine reads everything the server sends,
// unless the test stops it, so that the attacker never stalls the
// server's writes by accident.

// Native frame types and flags (PROTOCOL.md, section 2.2).
const (
	nfData     byte = 0x0
	nfReset    byte = 0x1
	nfWindow   byte = 0x2
	nfPing     byte = 0x3
	nfGoAway   byte = 0x4
	nfSettings byte = 0x5

	nfEnd  byte = 0x1
	nfOpen byte = 0x2
	nfAck  byte = 0x1
)

// nativeFrame appends a native frame.
func nativeFrame(b []byte, typ, flags byte, id uint32, payload []byte) []byte {
	return append(nativeHeader(b, uint32(len(payload)), typ, flags, id), payload...)
}

// nativeOpen appends the opening frame of call stream id carrying data,
// with END when end is set.
func nativeOpen(b []byte, id uint32, data []byte, end bool) []byte {
	flags := nfOpen
	if end {
		flags |= nfEnd
	}
	b = nativeHeader(b, uint32(1+len(data)), nfData, flags, id)
	return append(append(b, StreamType), data...)
}

// nativeReset appends a RESET of stream id with code.
func nativeReset(b []byte, id, code uint32) []byte {
	return nativeFrame(b, nfReset, 0, id, binary.BigEndian.AppendUint32(nil, code))
}

// nativeAttacker is a client of the native framing written by hand.
type nativeAttacker struct {
	t       testing.TB
	conn    net.Conn
	nextID  uint32 // the next stream id it opens: odd
	limit   uint32 // the server's MAX_INCOMING_STREAMS
	refused atomic.Int64
	resets  atomic.Int64 // RESETs with another code
	ended   atomic.Int64 // streams the server ended with END
	acks    atomic.Int64 // PING ACKs
	goAway  atomic.Int64 // the code of the server's GOAWAY, +1; 0 for none
	// answers, if set before the reader starts, collects what the server
	// sends on each stream and gets it at the stream's END.
	answers  func(id uint32, data []byte)
	done     chan struct{} // closed when the reader stops: the connection ended
	welcomed chan struct{} // closed when the server's answer to the session hello has arrived
	readErr  error         // why, once done is closed
}

// dialNative connects to addr and makes the handshake: a preface and
// SETTINGS of its own, the server's read before it returns. Unless read
// is false, a goroutine then reads and counts what the server sends.
func dialNative(t testing.TB, addr string, read bool, answers func(id uint32, data []byte)) *nativeAttacker {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a := &nativeAttacker{t: t, conn: conn, nextID: 1, answers: answers, done: make(chan struct{}), welcomed: make(chan struct{})}
	t.Cleanup(func() {
		conn.Close()
		if read {
			<-a.done
		}
	})
	hello := []byte("MUXRPC\x00\x01")
	var settings []byte
	for _, s := range [][2]uint32{{1, 100}, {2, 1 << 20}, {3, 1 << 16}} {
		settings = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint16(settings, uint16(s[0])), s[1])
	}
	a.write(nativeFrame(hello, nfSettings, 0, 0, settings))
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var pre [8]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil || string(pre[:]) != "MUXRPC\x00\x01" {
		t.Fatalf("the server's preface: %q, %v", pre, err)
	}
	typ, _, _, payload, err := readNativeFrame(br)
	if err != nil || typ != nfSettings {
		t.Fatalf("the server's SETTINGS: type %d, %v", typ, err)
	}
	a.limit = 1<<31 - 1
	for p := payload; len(p) >= 6; p = p[6:] {
		if binary.BigEndian.Uint16(p) == 1 {
			a.limit = binary.BigEndian.Uint32(p[2:])
		}
	}
	conn.SetReadDeadline(time.Time{})
	// The session hello, on stream 1, before the calls and without
	// waiting for the welcome, which the reader leaves out of its counts.
	helloPart := appendHello(nil, nil, nil)
	b := nativeHeader(nil, uint32(1+len(helloPart)), nfData, nfOpen|nfEnd, a.id())
	a.write(append(append(b, HelloStreamType), helloPart...))
	if read {
		go a.read(br)
	} else {
		close(a.done)
	}
	return a
}

// nativeHelloID is the stream of the attacker's session hello.
const nativeHelloID = 1

// readNativeFrame reads one frame.
func readNativeFrame(br *bufio.Reader) (typ, flags byte, id uint32, payload []byte, err error) {
	var h [9]byte
	if _, err = io.ReadFull(br, h[:]); err != nil {
		return
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags, id = h[3], h[4], binary.BigEndian.Uint32(h[5:])
	payload = make([]byte, n)
	_, err = io.ReadFull(br, payload)
	return
}

// read counts the server's frames until the connection ends.
func (a *nativeAttacker) read(br *bufio.Reader) {
	defer close(a.done)
	data := map[uint32][]byte{}
	for {
		typ, flags, id, payload, err := readNativeFrame(br)
		if err != nil {
			a.readErr = err
			return
		}
		if id == nativeHelloID {
			if typ == nfData && flags&nfEnd != 0 {
				close(a.welcomed)
			}
			continue
		}
		switch typ {
		case nfReset:
			if binary.BigEndian.Uint32(payload) == mux.ResetRefused {
				a.refused.Add(1)
			} else {
				a.resets.Add(1)
			}
			delete(data, id)
		case nfData:
			if a.answers != nil {
				data[id] = append(data[id], payload...)
			}
			if flags&nfEnd != 0 {
				a.ended.Add(1)
				if a.answers != nil {
					a.answers(id, data[id])
					delete(data, id)
				}
			}
		case nfPing:
			if flags&nfAck != 0 {
				a.acks.Add(1)
			}
		case nfGoAway:
			a.goAway.Store(int64(binary.BigEndian.Uint32(payload[4:])) + 1)
		}
	}
}

// write writes b, failing the test if the connection will not take it
// within 30 s.
func (a *nativeAttacker) write(b []byte) {
	a.t.Helper()
	if err := a.tryWrite(b); err != nil {
		a.t.Fatal(err)
	}
}

func (a *nativeAttacker) tryWrite(b []byte) error {
	a.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := a.conn.Write(b)
	return err
}

// id returns the next stream id.
func (a *nativeAttacker) id() uint32 {
	id := a.nextID
	a.nextID += 2
	return id
}

// pingPong sends a PING and waits for its ACK, proving that the server
// still serves the session and has processed what came before.
func (a *nativeAttacker) pingPong(within time.Duration) error {
	want := a.acks.Load() + 1
	a.write(nativeFrame(nil, nfPing, 0, 0, make([]byte, 8)))
	deadline := time.Now().Add(within)
	for a.acks.Load() < want {
		select {
		case <-a.done:
			return fmt.Errorf("the connection ended: %v", a.readErr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PING ACK within %v", within)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// waitCount waits until n reaches want, within d.
func waitCount(t testing.TB, d time.Duration, what string, n *atomic.Int64, want int64) {
	t.Helper()
	eventually(t, d, fmt.Sprintf("%s to reach %d", what, want), func() bool { return n.Load() >= want })
}

// Smux commands (github.com/xtaci/smux, protocol version 2) and the
// Smux transport's admission status (PROTOCOL.md, section 12).
const (
	smuxSYN byte = 0
	smuxFIN byte = 1
	smuxPSH byte = 2

	smuxAdmitted byte = 0
	smuxRefused  byte = 1
)

// smuxFrame appends a smux frame.
func smuxFrame(b []byte, cmd byte, sid uint32, payload []byte) []byte {
	return append(smuxHeader(b, cmd, uint16(len(payload)), sid), payload...)
}

// smuxAttacker is a smux client written by hand, that speaks the Smux
// transport's settings and stream types but none of its limits.
type smuxAttacker struct {
	t        testing.TB
	conn     net.Conn
	nextSID  uint32
	admitted atomic.Int64 // streams the server admitted
	refused  atomic.Int64 // streams the server refused with a status
	closed   atomic.Int64 // streams the server closed (FIN), refused or not
	done     chan struct{}
	readErr  error

	mu     sync.Mutex
	status map[uint32]bool // streams whose status has arrived
}

// dialSmux connects to addr, sends its settings stream and reads the
// server's, then reads and counts what the server sends.
func dialSmux(t testing.TB, addr string) *smuxAttacker {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a := &smuxAttacker{t: t, conn: conn, nextSID: smuxHelloSID, done: make(chan struct{}), status: map[uint32]bool{}}
	t.Cleanup(func() {
		conn.Close()
		<-a.done
	})
	// The settings stream: type 2^32-1, then a limit of 100.
	settings := binary.AppendUvarint(binary.AppendUvarint(nil, 1<<32-1), 100)
	hello := smuxFrame(nil, smuxSYN, 3, nil)
	hello = smuxFrame(hello, smuxPSH, 3, settings)
	hello = smuxFrame(hello, smuxFIN, 3, nil)
	// The session hello, before the calls and without waiting for the
	// welcome, which the reader leaves out of its counts.
	hello = smuxOpen(hello, a.sid(), HelloStreamType, appendHello(nil, nil, nil), false) // a FIN would close it
	a.write(hello)
	go a.read()
	return a
}

// read counts the server's frames until the connection ends. The server's
// settings stream is the first it opens; on every other stream, the first
// byte is the admission status.
func (a *smuxAttacker) read() {
	defer close(a.done)
	br := bufio.NewReader(a.conn)
	var h [8]byte
	var settingsSID uint32
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			a.readErr = err
			return
		}
		cmd, n, sid := h[1], int(binary.LittleEndian.Uint16(h[2:])), binary.LittleEndian.Uint32(h[4:])
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			a.readErr = err
			return
		}
		switch {
		case cmd == smuxSYN && settingsSID == 0:
			settingsSID = sid
		case sid == settingsSID, sid == smuxHelloSID:
		case cmd == smuxPSH && n > 0:
			a.mu.Lock()
			first := !a.status[sid]
			a.status[sid] = true
			a.mu.Unlock()
			if first && payload[0] == smuxRefused {
				a.refused.Add(1)
			} else if first {
				a.admitted.Add(1)
			}
		case cmd == smuxFIN:
			a.closed.Add(1)
			a.mu.Lock()
			delete(a.status, sid)
			a.mu.Unlock()
		}
	}
}

func (a *smuxAttacker) write(b []byte) {
	a.t.Helper()
	a.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := a.conn.Write(b); err != nil {
		a.t.Fatal(err)
	}
}

// sid returns the next stream id.
func (a *smuxAttacker) sid() uint32 {
	sid := a.nextSID
	a.nextSID += 2
	return sid
}

// smuxOpenCall appends the frames that open smux stream sid as a call
// stream carrying wire, and close it when fin is set.
func smuxOpenCall(b []byte, sid uint32, wire []byte, fin bool) []byte {
	return smuxOpen(b, sid, StreamType, wire, fin)
}

// smuxOpen appends the frames that open smux stream sid as a stream of
// type typ carrying wire, and close it when fin is set.
func smuxOpen(b []byte, sid uint32, typ byte, wire []byte, fin bool) []byte {
	b = smuxFrame(b, smuxSYN, sid, nil)
	b = smuxFrame(b, smuxPSH, sid, append([]byte{typ}, wire...))
	if fin {
		b = smuxFrame(b, smuxFIN, sid, nil)
	}
	return b
}

// smuxHelloSID is the stream of the attacker's session hello.
const smuxHelloSID = 5
