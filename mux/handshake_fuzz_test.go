package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// Fuzz targets for what a native peer sends first: its preface, its
// SETTINGS payload, and the handshake as a whole. Each decides the outcome
// of an input from PROTOCOL.md §1-§2.8 on its own (the spec* functions
// below) and requires the code to reach exactly that outcome.

// FuzzCheckPreface proves that checkPreface accepts exactly the eight bytes
// "MUXRPC\x00\x01", reports ErrNotMuxrpc when the magic or the reserved
// byte differ and ErrVersion when only the version does (PROTOCOL.md §1.1),
// and that what appendPreface writes is accepted.
func FuzzCheckPreface(f *testing.F) {
	f.Add(appendPreface(nil))
	f.Add([]byte("MUXRPC\x00\x02"))
	f.Add([]byte("MUXRPC\x01\x01"))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < prefaceLen {
			return
		}
		if err := checkPreface(appendPreface(nil)); err != nil {
			t.Fatalf("own preface rejected: %v", err)
		}
		err := checkPreface(b)
		switch {
		case string(b[:7]) != "MUXRPC\x00":
			if !errors.Is(err, ErrNotMuxrpc) || errors.Is(err, ErrVersion) {
				t.Fatalf("%q: %v, want ErrNotMuxrpc", b[:8], err)
			}
		case b[7] != 1:
			if !errors.Is(err, ErrVersion) || errors.Is(err, ErrNotMuxrpc) {
				t.Fatalf("%q: %v, want ErrVersion", b[:8], err)
			}
		case err != nil:
			t.Fatalf("%q: %v, want nil", b[:8], err)
		}
	})
}

// specSettings decodes a SETTINGS payload as PROTOCOL.md §2.8 says: 6-byte
// entries, the last of an identifier wins, unknown identifiers are ignored,
// absent ones take their defaults, and a value out of its range fails. Bytes
// past the last whole entry are ignored here; the frame header's length
// rule rejects them before the payload is read.
func specSettings(p []byte) (settings, bool) {
	s := settings{maxIncomingStreams: 1<<31 - 1, initialWindow: 262144, maxFrameSize: 1024}
	for i := 0; i+6 <= len(p); i += 6 {
		v := uint32(p[i+2])<<24 | uint32(p[i+3])<<16 | uint32(p[i+4])<<8 | uint32(p[i+5])
		switch uint16(p[i])<<8 | uint16(p[i+1]) {
		case 1:
			s.maxIncomingStreams = v
		case 2:
			if v < 1024 || v > 1<<31-1 {
				return s, false
			}
			s.initialWindow = v
		case 3:
			if v < 1024 || v > 1<<24-1 {
				return s, false
			}
			s.maxFrameSize = v
		}
	}
	return s, true
}

// FuzzParseSettings proves that parseSettings decodes any payload as
// PROTOCOL.md §2.8 specifies (values, defaults, ranges, last entry wins,
// unknown identifiers ignored), fails only with errFrame, and that the
// settings it returns encode (appendSettings) into a valid SETTINGS frame
// that decodes to them again. TestUnitDecoderAllocation checks that a
// valid payload decodes without allocating.
func FuzzParseSettings(f *testing.F) {
	for _, s := range []settings{
		{maxIncomingStreams: 1000, initialWindow: 262144, maxFrameSize: 65536}, // the Go defaults, PROTOCOL.md §11
		{maxIncomingStreams: 0, initialWindow: 1024, maxFrameSize: 1<<24 - 1},
		{maxIncomingStreams: 1<<32 - 1, initialWindow: 1<<31 - 1, maxFrameSize: 1024},
	} {
		f.Add(appendSettings(nil, s)[frameHeaderLen:])
	}
	f.Add([]byte{})
	f.Add(appendSetting(appendSetting(nil, 0x7777, 5), settingInitialWindow, 1023))
	f.Add(appendSetting(appendSetting(nil, settingMaxFrameSize, 1<<24), settingMaxFrameSize, 1<<14))
	f.Fuzz(func(t *testing.T, p []byte) {
		got, err := parseSettings(p)
		want, ok := specSettings(p)
		if !ok {
			if !errors.Is(err, errFrame) {
				t.Fatalf("% x: parsed as %+v, %v; want errFrame", p, got, err)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("% x: parsed as %+v, %v; want %+v", p, got, err, want)
		}
		enc := appendSettings(nil, got)
		h, err := parseFrameHeader(enc, maxControlPayload)
		if err != nil || h.typ != frameSettings || int(h.length) != len(enc)-frameHeaderLen {
			t.Fatalf("appendSettings(%+v) = % x: header %+v, %v", got, enc, h, err)
		}
		if again, err := parseSettings(enc[frameHeaderLen:]); err != nil || again != got {
			t.Fatalf("%+v encodes as % x, which decodes as %+v, %v", got, enc, again, err)
		}
	})
}

// handshakeOutcome is how a handshake ends.
type handshakeOutcome int

const (
	handshakeOK handshakeOutcome = iota
	handshakeNotMuxrpc
	handshakeVersion
	handshakeProtocol
	handshakeConnEnded // the connection ended before the peer's hello was complete
)

func (o handshakeOutcome) String() string {
	return [...]string{"success", "ErrNotMuxrpc", "ErrVersion", "ErrProtocol", "end of connection"}[o]
}

// specHandshake says how a handshake ends whose peer sends hello and then
// closes the connection (PROTOCOL.md §1.1, §1.2, §2.1, §2.8), and with
// which settings when it succeeds.
func specHandshake(hello []byte) (handshakeOutcome, settings) {
	const preface = "MUXRPC\x00\x01"
	if len(hello) < 8 {
		if string(hello) != preface[:len(hello)] {
			return handshakeNotMuxrpc, settings{}
		}
		return handshakeConnEnded, settings{}
	}
	if string(hello[:7]) != preface[:7] {
		return handshakeNotMuxrpc, settings{}
	}
	if hello[7] != preface[7] {
		return handshakeVersion, settings{}
	}
	h := hello[8:]
	if len(h) < 9 {
		return handshakeConnEnded, settings{}
	}
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	// The first frame must be a SETTINGS frame with a valid header: stream
	// 0 (so the reserved bit clear too), no flags, a multiple of 6 bytes,
	// at most 16 384 of them.
	if h[3] != 5 || h[4] != 0 || h[5]|h[6]|h[7]|h[8] != 0 || length%6 != 0 || length > 16384 {
		return handshakeProtocol, settings{}
	}
	if len(h) < 9+length {
		return handshakeConnEnded, settings{}
	}
	s, ok := specSettings(h[9 : 9+length])
	if !ok {
		return handshakeProtocol, settings{}
	}
	return handshakeOK, s
}

// outcomeOf classifies a handshake's error.
func outcomeOf(err error) (handshakeOutcome, bool) {
	switch {
	case err == nil:
		return handshakeOK, true
	case errors.Is(err, ErrNotMuxrpc):
		return handshakeNotMuxrpc, true
	case errors.Is(err, ErrVersion):
		return handshakeVersion, true
	case errors.Is(err, ErrProtocol):
		return handshakeProtocol, true
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return handshakeConnEnded, true
	}
	return 0, false
}

// ownHelloLen is the length of the preface and SETTINGS a session sends.
var ownHelloLen = len(appendSettings(appendPreface(nil), settings{}))

// runHandshake starts a session, the client side or the server's, on one
// end of an in-memory pipe whose other end sends hello, reads what the
// session sends, and closes once the session's own hello is read (or the
// session gave up first), so that only the input decides the outcome. It
// returns the session, or its handshake's error, and a function that ends
// it all; a handshake still running after 5 seconds fails the test.
func runHandshake(t testing.TB, hello []byte, client bool, cfg *Config) (*Session, error, func()) {
	conn, peer := net.Pipe()
	res := make(chan sessionResult, 1)
	go func() {
		s, err := newSession(context.Background(), conn, cfg, client)
		res <- sessionResult{s: s, err: err}
	}()
	ownRead := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.ReadFull(peer, make([]byte, ownHelloLen))
		close(ownRead)
		io.Copy(io.Discard, peer)
	}()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		peer.Write(hello) // fails once the session stops reading
		<-ownRead
		peer.Close()
	}()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	var r sessionResult
	select {
	case r = <-res:
	case <-timer.C:
		peer.Close()
		conn.Close()
		<-res
		<-wrote
		<-drained
		t.Fatalf("handshake on % x still running after 5s", hello)
	}
	return r.s, r.err, func() {
		if r.s != nil {
			r.s.Kill()
		}
		peer.Close()
		<-wrote
		<-drained
	}
}

// FuzzHandshake feeds a session's handshake, the server's or the
// client's, arbitrary bytes as the peer's first bytes, after which the peer
// closes the connection. It proves that the handshake ends, at once and not
// by its timeout, exactly as PROTOCOL.md §1 says: ErrNotMuxrpc, ErrVersion,
// ErrProtocol, the end of the connection, or success with the settings the
// peer announced; and that nothing is left running.
func FuzzHandshake(f *testing.F) {
	hello := func(p []byte) []byte { return append(appendPreface(nil), frame(frameSettings, 0, 0, p)...) }
	defaults := appendSettings(appendPreface(nil), settings{maxIncomingStreams: 1000, initialWindow: 262144, maxFrameSize: 65536})
	for _, client := range []bool{false, true} {
		f.Add(defaults, client)
		f.Add(append(defaults, pingFrame(1, false)...), client)
		f.Add(hello(nil), client)
		f.Add(hello(appendSetting(nil, settingInitialWindow, 1023)), client)
		f.Add(append(appendPreface(nil), pingFrame(1, false)...), client)
		f.Add([]byte("MUXRPC\x00\x02"), client)
		f.Add([]byte("MUX"), client)
		f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), client)
		f.Add(httpProbe, client) // what Dial asks a silent server
	}
	cfg := &Config{KeepAliveInterval: -1, HandshakeTimeout: 10 * time.Second}
	f.Fuzz(func(t *testing.T, hello []byte, client bool) {
		base := runtime.NumGoroutine()
		s, err, end := runHandshake(t, hello, client, cfg)
		defer noGoroutinesLeft(t, base)
		defer end()
		want, wantSettings := specHandshake(hello)
		got, known := outcomeOf(err)
		if errors.Is(err, os.ErrDeadlineExceeded) || !known {
			t.Fatalf("hello % x: handshake failed with %v, want %v", hello, err, want)
		}
		if got != want {
			t.Fatalf("hello % x: handshake ended with %v (%v), want %v", hello, got, err, want)
		}
		if got == handshakeOK && s.peer != wantSettings {
			t.Fatalf("hello % x: the session took the peer's settings as %+v, want %+v", hello, s.peer, wantSettings)
		}
	})
}

// noGoroutinesLeft waits, at most two seconds, until no more goroutines
// run than base, and otherwise fails with their stacks: an input must not
// leave anything running.
func noGoroutinesLeft(t testing.TB, base int) {
	if !soon(2*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left running by the input:\n%s", runtime.NumGoroutine()-base, buf[:runtime.Stack(buf, true)])
	}
}

// soon reports whether cond holds within d. It yields rather than sleeps
// at first, so that a fuzz target waiting for a goroutine to finish costs
// microseconds, not the millisecond of a sleep.
func soon(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for i := 0; !cond(); i++ {
		if time.Now().After(deadline) {
			return false
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
	return true
}

// TestHandshakeAllocationBoundedByInput runs handshakes on the corpus of
// FuzzHandshake and on hellos that announce more than they send: what a
// handshake allocates, beyond the fixed cost of a session (its 32 KiB read
// buffer above all, PROTOCOL.md §1.3), grows at most in proportion to the
// bytes the peer sent; a SETTINGS header that claims 16 KiB of payload
// costs nothing until the payload comes.
func TestHandshakeAllocationBoundedByInput(t *testing.T) {
	inputs := [][]byte{
		nil,
		appendPreface(nil),
		append(appendPreface(nil), appendFrameHeader(nil, frameHeader{length: 16380, typ: frameSettings})...),
		append(appendPreface(nil), frame(frameSettings, 0, 0, make([]byte, 16380))...),
		append(appendPreface(nil), appendFrameHeader(nil, frameHeader{length: 1<<24 - 1, typ: frameSettings})...),
	}
	for _, c := range fuzzCorpus(t, "FuzzHandshake") {
		inputs = append(inputs, c[0].([]byte))
	}
	cfg := &Config{KeepAliveInterval: -1, HandshakeTimeout: 10 * time.Second}
	measure := func(hello []byte) uint64 {
		return bytesAllocated(func() {
			_, _, end := runHandshake(t, hello, false, cfg)
			end()
		})
	}
	measure(nil) // warm up: pools, the runtime's first allocations
	fixed := measure(nil)
	const fixedBound = 64 << 10
	if fixed > fixedBound {
		t.Fatalf("a handshake with a silent peer allocates %d bytes, more than %d", fixed, fixedBound)
	}
	for _, hello := range inputs {
		got := measure(hello)
		if limit := uint64(fixedBound + 2*len(hello)); got > limit {
			t.Errorf("a handshake fed %d bytes (% .20x...) allocates %d bytes, more than %d", len(hello), hello, got, limit)
		}
	}
	t.Logf("a handshake allocates %d bytes for an empty hello", fixed)
}

// bytesAllocated returns what the process allocated while f ran, which
// must leave nothing running. The test runs alone, so that is f's doing.
func bytesAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
