package mux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/xtaci/smux"
)

// Fuzz targets for the Smux transport's own additions to smux (PROTOCOL.md
// §12): the client's first frames that the server reads before it starts
// smux, the frame scanner that follows smux's frames, the handshake's
// settings streams, the stream type in front of each stream and the
// admission status byte in front of the answer. A bare smux peer, the smux
// package itself, sits on the far end of an in-memory pipe.

// specSmuxHello says what readSmuxHello makes of a client's first bytes,
// from PROTOCOL.md §12 (Go implementation): the frames up to the end of
// the first PSH frame of the first stream, NOPs allowed before it, all
// within 64 bytes; a header whose first byte is not version 2 means not a
// muxrpc peer; anything else before the settings is a protocol error.
// It returns the length of the hello, or the sentinel error.
func specSmuxHello(b []byte) (int, error) {
	n, opened := 0, false
	var sid []byte
	for {
		if n+8 > 64 {
			return 0, ErrProtocol
		}
		if len(b) > n && b[n] != 2 {
			return 0, ErrNotMuxrpc
		}
		if len(b) < n+8 {
			return 0, io.ErrUnexpectedEOF // or io.EOF: the input ended
		}
		h := b[n : n+8]
		n += 8
		cmd, length := h[1], int(h[2])|int(h[3])<<8
		switch {
		case cmd == 3 && length == 0: // NOP
		case cmd == 0 && length == 0 && !opened: // SYN
			opened, sid = true, h[4:8]
		case cmd == 2 && opened && bytes.Equal(h[4:8], sid) && length > 0 && n+length <= 64: // PSH
			if len(b) < n+length {
				return 0, io.ErrUnexpectedEOF
			}
			return n + length, nil
		default:
			return 0, ErrProtocol
		}
	}
}

// FuzzSmuxHello proves that readSmuxHello, which reads a Smux client's
// first bytes before any smux session exists, returns exactly what
// specSmuxHello says (the hello, or ErrNotMuxrpc, ErrProtocol, or the end
// of the input) and never reads a byte past the hello. (What it allocates
// is bounded by TestUnitDecoderAllocation: measured inside a fuzz worker,
// the process's allocations include the worker's own.)
func FuzzSmuxHello(f *testing.F) {
	f.Add(smuxClientHello(1000))
	f.Add(append(smuxFrame(nil, smuxNOP, 0, nil), smuxClientHello(0)...))
	f.Add(smuxFrame(nil, smuxPSH, 3, []byte{1}))
	f.Add(smuxFrame(smuxFrame(nil, smuxSYN, 3, nil), smuxPSH, 3, make([]byte, 49)))
	f.Add([]byte("MUXRPC\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		hello, err := readSmuxHello(r)
		want, wantErr := specSmuxHello(b)
		if wantErr != nil {
			if hello != nil || !errors.Is(err, wantErr) && !(wantErr == io.ErrUnexpectedEOF && errors.Is(err, io.EOF)) {
				t.Fatalf("% x: %q, %v; want %v", b, hello, err, wantErr)
			}
		} else if err != nil || !bytes.Equal(hello, b[:want]) {
			t.Fatalf("% x: %q, %v; want the first %d bytes", b, hello, err, want)
		}
		if read := len(b) - r.Len(); read > 64 || err == nil && read != want {
			t.Fatalf("% x: read %d bytes (hello of %d)", b, read, want)
		}
	})
}

// FuzzSmuxScanner proves that smuxScanner, which follows the frames of a
// smux connection in both directions, reports the same commands and
// stream ids however the bytes are split into reads: exactly the frames
// that a walk over 8-byte headers and their lengths finds.
func FuzzSmuxScanner(f *testing.F) {
	f.Add(smuxClientHello(100), uint16(3))
	f.Add(smuxFrame(smuxFrame(nil, smuxPSH, 5, make([]byte, 300)), smuxFIN, 5, nil), uint16(7))
	f.Add([]byte{2, 2, 0xff, 0xff, 1, 0, 0, 0}, uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		type seen struct {
			cmd    byte
			sid    uint32
			length int
		}
		var want []seen
		for rest := b; len(rest) >= 8; {
			want = append(want, seen{rest[1], binary.LittleEndian.Uint32(rest[4:8]), int(binary.LittleEndian.Uint16(rest[2:4]))})
			n := 8 + int(binary.LittleEndian.Uint16(rest[2:4]))
			rest = rest[min(n, len(rest)):]
		}
		var got []seen
		sc := smuxScanner{on: func(cmd byte, sid uint32, length int) { got = append(got, seen{cmd, sid, length}) }}
		step := int(split%64) + 1
		for rest := b; len(rest) > 0; {
			k := min(step, len(rest))
			sc.scan(rest[:k])
			rest = rest[k:]
			step = step%13 + 1 // uneven pieces
		}
		if len(got) != len(want) {
			t.Fatalf("% x in pieces from %d: frames %v, want %v", b, split%64+1, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("% x in pieces from %d: frames %v, want %v", b, split%64+1, got, want)
			}
		}
	})
}

// smuxFuzzConfig is the Smux session the targets below run: no
// keepalive, a handshake timeout no input may reach.
var smuxFuzzConfig = &Config{Transport: Smux, MaxIncomingStreams: 4, StreamWindow: 1 << 16,
	KeepAliveInterval: -1, HandshakeTimeout: 5 * time.Second, CloseTimeout: time.Second}

// FuzzSmuxHandshake feeds a Smux session's handshake, the server's or the
// client's, arbitrary bytes as the peer's smux traffic, after which the
// peer hangs up. It proves that the handshake ends at once, never by its
// timeout, with an error or a session; that a session comes only from
// input that carries a settings stream (its reserved type, ff ff ff ff
// 0f, travels in the input); that a first byte other than smux's version
// 2 is ErrNotMuxrpc on the server; and that nothing is left running.
func FuzzSmuxHandshake(f *testing.F) {
	for _, client := range []bool{false, true} {
		f.Add(smuxClientHello(1000), client)
		f.Add(append(smuxClientHello(1), smuxFrame(nil, smuxSYN, 5, nil)...), client)
		f.Add(smuxFrame(smuxFrame(nil, smuxSYN, 3, nil), smuxPSH, 3, []byte{0, 1}), client)
		f.Add(smuxFrame(nil, smuxUPDForTest, 3, make([]byte, 8)), client)
		f.Add([]byte("MUXRPC\x00\x01"), client)
	}
	f.Fuzz(func(t *testing.T, b []byte, client bool) {
		base := runtime.NumGoroutine()
		defer noGoroutinesLeft(t, base)
		conn, peer := net.Pipe()
		res := make(chan sessionResult, 1)
		go func() {
			start := time.Now()
			s, err := newSession(context.Background(), conn, smuxFuzzConfig, client)
			res <- sessionResult{s, err, time.Since(start)}
		}()
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, peer)
			close(drained)
		}()
		peer.SetWriteDeadline(time.Now().Add(5 * time.Second))
		peer.Write(b)
		peer.Close()
		var r sessionResult
		select {
		case r = <-res:
		case <-time.After(10 * time.Second):
			conn.Close()
			<-res
			t.Fatalf("% x: the handshake still runs 10s after the peer hung up", b)
		}
		<-drained
		if r.s != nil {
			r.s.Kill()
		}
		var ne net.Error
		if errors.Is(r.err, os.ErrDeadlineExceeded) || errors.Is(r.err, smux.ErrTimeout) || errors.As(r.err, &ne) && ne.Timeout() {
			t.Fatalf("% x: the handshake ended by its timeout (%v, after %v) although the peer had hung up", b, r.err, r.d)
		}
		if r.err == nil && !bytes.Contains(b, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}) {
			t.Fatalf("% x: a session without the peer's settings stream", b)
		}
		if !client && len(b) > 0 && b[0] != smuxVersion && !errors.Is(r.err, ErrNotMuxrpc) {
			t.Fatalf("% x: %v, want ErrNotMuxrpc", b, r.err)
		}
	})
}

// smuxUPDForTest is smux's window update command, which no hello carries.
const smuxUPDForTest = 4

// smuxPipeSession starts a Smux session, the server or the client side,
// on one end of a net.Pipe, with a bare smux peer on the other that does
// muxrpc's handshake (its settings stream) and nothing else on its own.
func smuxPipeSession(t testing.TB, client bool) (*Session, *smux.Session) {
	conn, peer := net.Pipe()
	res := make(chan sessionResult, 1)
	go func() {
		s, err := newSession(context.Background(), conn, smuxFuzzConfig, client)
		res <- sessionResult{s: s, err: err}
	}()
	sc := smux.DefaultConfig()
	sc.Version = 2
	sc.KeepAliveDisabled = true
	start := smux.Client
	if client {
		start = smux.Server
	}
	raw, err := start(peer, sc)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(err error) {
		raw.Close()
		if r := <-res; r.s != nil {
			r.s.Kill()
		}
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	sendSettings := func() error {
		st, err := raw.OpenStream()
		if err != nil {
			return err
		}
		defer st.Close()
		_, err = st.Write(smuxSettingsPayload(100))
		return err
	}
	readSettings := func() error {
		st, err := raw.AcceptStream()
		if err != nil {
			return err
		}
		defer st.Close()
		b, err := io.ReadAll(st)
		if err == nil && !bytes.Equal(b, smuxSettingsPayload(uint64(smuxFuzzConfig.MaxIncomingStreams))) {
			err = errors.New("the session's settings stream carries " + string(b))
		}
		return err
	}
	steps := []func() error{sendSettings, readSettings}
	if client { // the client sends first
		steps = []func() error{readSettings, sendSettings}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			fail(err)
		}
	}
	raw.SetDeadline(time.Time{})
	r := <-res
	if r.err != nil {
		raw.Close()
		t.Fatal(r.err)
	}
	return r.s, raw
}

// endSmux closes both ends, waiting for the session to end.
func endSmux(t testing.TB, s *Session, raw *smux.Session) {
	raw.Close()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Error("the session still runs 5s after its peer closed the connection")
	}
	s.Kill()
}

// FuzzSmuxStreamType opens a smux stream to a Smux server session and
// sends arbitrary first bytes on it, then closes it. It proves the stream
// type of PROTOCOL.md §12: bytes that begin with a uvarint below 2^32-1
// make a stream of that type, which reads the bytes after it, and whose
// first answer the opener reads behind the status byte 00 (admitted); any
// other first bytes (no whole uvarint, the reserved settings type, or
// above it) get the stream closed with nothing sent, and the session goes
// on; nothing is left running.
func FuzzSmuxStreamType(f *testing.F) {
	for _, v := range []uint64{0, 2, 127, 128, 300, 1<<32 - 2, 1<<32 - 1, 1 << 40} {
		f.Add(append(binary.AppendUvarint(nil, v), "request"...))
	}
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0x80, 0x00, 'x'}) // not minimal: type 0
	f.Add(bytes.Repeat([]byte{0xff}, 11))
	f.Fuzz(func(t *testing.T, first []byte) {
		base := runtime.NumGoroutine()
		defer noGoroutinesLeft(t, base)
		s, raw := smuxPipeSession(t, false)
		defer endSmux(t, s, raw)
		typ, k := specUvarint(first)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()

		st, err := raw.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write(first); err != nil && len(first) > 0 {
			t.Fatal(err)
		}
		switch {
		case k > 0 && typ < 1<<32-1:
			// Admitted: the rest is the stream's data.
			in, err := s.AcceptType(ctx, StreamType(typ))
			if err != nil {
				t.Fatalf("% x: no stream of type %d: %v", first, typ, err)
			}
			defer in.Close()
			in.SetDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(first)-k)
			if _, err := io.ReadFull(in, got); err != nil || !bytes.Equal(got, first[k:]) {
				t.Fatalf("% x: the stream of type %d reads %q, %v; want %q", first, typ, got, err, first[k:])
			}
			if _, err := in.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			answer := make([]byte, 3)
			if _, err := io.ReadFull(st, answer); err != nil || string(answer) != "\x00ok" {
				t.Fatalf("% x: the opener reads %q, %v; want the status 00, then the answer", first, answer, err)
			}
			return
		case k != 0:
			// A whole uvarint that is no stream type (the reserved settings
			// type or above), or one too long for 64 bits: the stream is
			// closed at once, without a status.
			if b, err := io.ReadAll(st); len(b) != 0 || err != nil {
				t.Fatalf("% x: the opener of a stream without a valid type reads %q, %v; want the end of the stream", first, b, err)
			}
		default:
			// The uvarint is cut short: the stream waits for the rest, which
			// ending the opener's side ends.
			if !soon(5*time.Second, func() bool { return s.NumStreams() == 1 }) {
				t.Fatalf("% x: the session did not take the stream", first)
			}
			st.Close()
		}
		if !soon(5*time.Second, func() bool { return s.NumStreams() == 0 }) {
			t.Fatalf("% x: the session still counts the malformed stream", first)
		}
		done, stop := context.WithCancel(ctx)
		stop()
		for _, typ := range []StreamType{TypeDefault, StreamType(typ)} {
			if in, err := s.AcceptType(done, typ); err == nil {
				in.Close()
				t.Fatalf("% x: a stream without a valid type was admitted, as type %d", first, typ)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatalf("% x: a stream without a valid type ended the session: %v", first, err)
		}
	})
}

// specUvarint decodes a uvarint (LEB128, at most 10 bytes, within 64
// bits) at the start of b: its value and length; a length of 0 if b ends
// first, -1 if it is too long.
func specUvarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b); i++ {
		if i == 10 || i == 9 && b[i] > 1 {
			return 0, -1
		}
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

// FuzzSmuxAdmissionStatus has a Smux client session open a stream to a
// bare smux peer, which answers with arbitrary bytes. It proves the
// admission status of PROTOCOL.md §12 as the opener reads it: 00 and then
// the answer's bytes; 01, a retry-safe ErrRefused; any other first byte,
// ErrProtocol; no byte at all, the end of the stream; the session goes on
// in every case, and nothing is left running.
func FuzzSmuxAdmissionStatus(f *testing.F) {
	f.Add([]byte{smuxAdmitted})
	f.Add([]byte("\x00answer"))
	f.Add([]byte{smuxRefused})
	f.Add([]byte{smuxRefused, 'x'})
	f.Add([]byte{})
	f.Add([]byte("\x02?"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		base := runtime.NumGoroutine()
		defer noGoroutinesLeft(t, base)
		s, raw := smuxPipeSession(t, true)
		defer endSmux(t, s, raw)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := s.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write([]byte("req")); err != nil {
			t.Fatal(err)
		}
		var served sync.WaitGroup
		served.Add(1)
		peerErr := make(chan error, 1)
		go func() {
			defer served.Done()
			in, err := raw.AcceptStream()
			if err != nil {
				peerErr <- err
				return
			}
			in.SetDeadline(time.Now().Add(5 * time.Second))
			req := make([]byte, 4)
			if _, err := io.ReadFull(in, req); err != nil || string(req) != "\x00req" {
				peerErr <- errors.New("the peer read " + string(req))
				in.Close()
				return
			}
			in.Write(answer)
			if len(answer) <= 1 {
				in.Close() // nothing more than the status, if that
			} else {
				defer in.Close()
				in.Read(make([]byte, 1)) // until the opener closes
			}
			peerErr <- nil
		}()
		got := make([]byte, max(len(answer)-1, 1))
		var n int
		if len(answer) > 1 && answer[0] == smuxAdmitted {
			n, err = io.ReadFull(st, got)
		} else {
			n, err = st.Read(got)
		}
		st.Close()
		served.Wait()
		if perr := <-peerErr; perr != nil {
			t.Fatal(perr)
		}
		switch {
		case len(answer) == 0 || len(answer) == 1 && answer[0] == smuxAdmitted:
			if n != 0 || !errors.Is(err, io.EOF) {
				t.Fatalf("answer % x, then the end of the stream: the opener reads %q, %v; want io.EOF", answer, got[:n], err)
			}
		case answer[0] == smuxAdmitted:
			if err != nil || !bytes.Equal(got[:n], answer[1:]) {
				t.Fatalf("answer % x: the opener reads %q, %v; want %q", answer, got[:n], err, answer[1:])
			}
		case answer[0] == smuxRefused:
			if n != 0 || !errors.Is(err, ErrRefused) || !IsRetrySafe(err) {
				t.Fatalf("answer % x: the opener reads %q, %v; want a retry-safe ErrRefused", answer, got[:n], err)
			}
		default:
			if n != 0 || !errors.Is(err, ErrProtocol) {
				t.Fatalf("answer % x: the opener reads %q, %v; want ErrProtocol", answer, got[:n], err)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatalf("answer % x: the session ended: %v", answer, err)
		}
	})
}

// FuzzSmuxSessionInput feeds a running Smux server session, whose
// application accepts and reads every stream, arbitrary bytes as more of
// the peer's smux traffic, then hangs up. It proves the session then ends,
// with an error, within bounded time, and leaves nothing running:
// whatever the frames say, smux's or this package's additions.
func FuzzSmuxSessionInput(f *testing.F) {
	typed := func(sid uint32, payload []byte) []byte {
		return smuxFrame(smuxFrame(nil, smuxSYN, sid, nil), smuxPSH, sid, payload)
	}
	f.Add([]byte{})
	f.Add(typed(5, []byte("\x00hello")))
	f.Add(append(typed(5, []byte("\x00hello")), smuxFrame(nil, smuxFIN, 5, nil)...))
	f.Add(typed(5, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}))
	f.Add(bytes.Join([][]byte{typed(5, []byte{0}), typed(7, []byte{0}), typed(9, []byte{0}), typed(11, []byte{0}), typed(13, []byte{0})}, nil))
	f.Add(smuxFrame(nil, smuxPSH, 5, make([]byte, 100)))
	f.Add([]byte{smuxVersion, smuxPSH, 0xff, 0xff, 5, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		base := runtime.NumGoroutine()
		defer noGoroutinesLeft(t, base)
		conn, peer := net.Pipe()
		res := make(chan sessionResult, 1)
		go func() {
			s, err := Server(conn, smuxFuzzConfig)
			res <- sessionResult{s: s, err: err}
		}()
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, peer)
			close(drained)
		}()
		peer.SetWriteDeadline(time.Now().Add(5 * time.Second))
		peer.Write(smuxClientHello(100))
		r := <-res
		if r.err != nil {
			peer.Close()
			<-drained
			t.Fatal(r.err)
		}
		s := r.s
		var app sync.WaitGroup
		app.Add(1)
		go func() {
			defer app.Done()
			for {
				st, err := s.Accept(context.Background())
				if err != nil {
					return
				}
				app.Add(1)
				go func() {
					defer app.Done()
					defer st.Close()
					io.Copy(io.Discard, st)
				}()
			}
		}()
		peer.Write(b) // fails once the session stops reading
		peer.Close()
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			s.Kill()
			app.Wait()
			<-drained
			t.Fatalf("% x: the session still runs 5s after its peer hung up", b)
		}
		if s.Err() == nil {
			t.Fatalf("% x: the session ended without an error", b)
		}
		s.Kill()
		app.Wait()
		<-drained
	})
}
