package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func TestFrameHeaderGolden(t *testing.T) {
	h := frameHeader{length: 0x010203, typ: frameWindowUpdate, flags: 0, streamID: 0x7fffff05}
	want := []byte{0x01, 0x02, 0x03, 0x02, 0x00, 0x7f, 0xff, 0xff, 0x05}
	if got := appendFrameHeader(nil, h); !bytes.Equal(got, want) {
		t.Fatalf("appendFrameHeader = % x, want % x", got, want)
	}
	if got := appendFrameHeader([]byte("ab"), h); !bytes.Equal(got[2:], want) || string(got[:2]) != "ab" {
		t.Fatalf("appendFrameHeader does not append: % x", got)
	}
	if got := appendPreface(nil); string(got) != "MUXRPC\x00\x01" {
		t.Fatalf("preface %q", got)
	}
	s := appendSettings(nil, settings{maxIncomingStreams: 10, initialWindow: 1 << 16, maxFrameSize: 1 << 14})
	wantS := []byte{
		0, 0, 18, 5, 0, 0, 0, 0, 0,
		0, 1, 0, 0, 0, 10,
		0, 2, 0, 1, 0, 0,
		0, 3, 0, 0, 0x40, 0,
	}
	if !bytes.Equal(s, wantS) {
		t.Fatalf("appendSettings = % x, want % x", s, wantS)
	}
}

func TestParseFrameHeader(t *testing.T) {
	const max = 1 << 14
	hdr := func(length uint32, typ frameType, flags uint8, id uint32) []byte {
		return appendFrameHeader(nil, frameHeader{length: length, typ: typ, flags: flags, streamID: id})
	}
	valid := [][]byte{
		hdr(0, frameData, 0, 1),
		hdr(max, frameData, flagOpen|flagEnd, maxStreamID),
		hdr(4, frameReset, 0, 2),
		hdr(4, frameWindowUpdate, 0, 3),
		hdr(8, framePing, 0, 0),
		hdr(8, framePing, flagAck, 0),
		hdr(8, frameGoAway, 0, 0),
		hdr(100, frameGoAway, 0, 0),
		hdr(0, frameSettings, 0, 0),
		hdr(18, frameSettings, 0, 0),
	}
	for _, b := range valid {
		h, err := parseFrameHeader(b, max)
		if err != nil {
			t.Errorf("% x: %v", b, err)
			continue
		}
		if got := appendFrameHeader(nil, h); !bytes.Equal(got, b) {
			t.Errorf("round trip of % x gives % x", b, got)
		}
	}
	invalid := [][]byte{
		hdr(max+1, frameData, 0, 1),
		hdr(0, frameData, 0, 0),
		hdr(0, frameData, 0x4, 1),
		hdr(4, frameData, 0, 1|1<<31),
		hdr(4, frameReset, 0, 0),
		hdr(5, frameReset, 0, 1),
		hdr(4, frameReset, 1, 1),
		hdr(4, frameWindowUpdate, 0, 0),
		hdr(3, frameWindowUpdate, 0, 1),
		hdr(8, framePing, 0, 1),
		hdr(7, framePing, 0, 0),
		hdr(8, framePing, 2, 0),
		hdr(7, frameGoAway, 0, 0),
		hdr(8, frameGoAway, 0, 1),
		hdr(7, frameSettings, 0, 0),
		hdr(6, frameSettings, 0, 1),
		hdr(0, 6, 0, 0),
		hdr(0, 0xff, 0, 1),
	}
	for _, b := range invalid {
		if h, err := parseFrameHeader(b, max); !errors.Is(err, errFrame) {
			t.Errorf("% x parsed as %+v, %v; want errFrame", b, h, err)
		}
	}
}

func TestCheckPreface(t *testing.T) {
	if err := checkPreface(appendPreface(nil)); err != nil {
		t.Fatal(err)
	}
	for b, want := range map[string]error{
		"MUXRPC\x00\x02":                   ErrVersion,
		"MUXRPC\x00\x00":                   ErrVersion,
		"MUXRPC\x01\x01":                   ErrNotMuxrpc,
		"muxrpc\x00\x01":                   ErrNotMuxrpc,
		"GET / HT":                         ErrNotMuxrpc,
		"\x00\x00\x12\x05\x00\x00\x00\x00": ErrNotMuxrpc,
	} {
		if err := checkPreface([]byte(b)); !errors.Is(err, want) {
			t.Errorf("%q: %v, want %v", b, err, want)
		}
	}
}

func TestParseSettings(t *testing.T) {
	s, err := parseSettings(nil)
	if err != nil || s.maxIncomingStreams != maxStreamID || s.initialWindow != defaultStreamWindow || s.maxFrameSize != minFrameSize {
		t.Fatalf("defaults: %+v, %v", s, err)
	}
	p := appendSetting(nil, 0x77, 12345) // unknown: ignored
	p = appendSetting(p, settingMaxIncomingStreams, 3)
	p = appendSetting(p, settingInitialWindow, 1<<20)
	p = appendSetting(p, settingMaxFrameSize, 1<<16)
	s, err = parseSettings(p)
	if err != nil || s != (settings{maxIncomingStreams: 3, initialWindow: 1 << 20, maxFrameSize: 1 << 16}) {
		t.Fatalf("got %+v, %v", s, err)
	}
	for _, bad := range [][]byte{
		appendSetting(nil, settingInitialWindow, 1<<31),
		appendSetting(nil, settingMaxFrameSize, minFrameSize-1),
		appendSetting(nil, settingMaxFrameSize, maxFramePayload+1),
	} {
		if _, err := parseSettings(bad); !errors.Is(err, errFrame) {
			t.Errorf("% x: %v, want errFrame", bad, err)
		}
	}
}

// FuzzParseFrameHeader checks that any nine bytes either parse into a
// header that encodes back to the same bytes and obeys the rules, or fail
// with errFrame; never a panic.
func FuzzParseFrameHeader(f *testing.F) {
	f.Add(appendFrameHeader(nil, frameHeader{length: 5, typ: frameData, flags: flagOpen, streamID: 1}), uint32(1<<16))
	f.Add(pingFrame(7, true)[:frameHeaderLen], uint32(1<<10))
	f.Add(appendSettings(nil, rawSettings)[:frameHeaderLen], uint32(1<<14))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint32(maxFramePayload))
	f.Add(make([]byte, frameHeaderLen), uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, maxPayload uint32) {
		if len(b) < frameHeaderLen {
			return
		}
		h, err := parseFrameHeader(b, maxPayload)
		if err != nil {
			if !errors.Is(err, errFrame) {
				t.Fatalf("error %v is not errFrame", err)
			}
			return
		}
		if got := appendFrameHeader(nil, h); !bytes.Equal(got, b[:frameHeaderLen]) {
			t.Fatalf("% x parsed as %+v, which encodes as % x", b[:frameHeaderLen], h, got)
		}
		if h.length > maxPayload || h.streamID > maxStreamID {
			t.Fatalf("accepted %+v with max payload %d", h, maxPayload)
		}
		switch h.typ {
		case frameData:
			if h.streamID == 0 || h.flags&^(flagEnd|flagOpen) != 0 {
				t.Fatalf("accepted %+v", h)
			}
		case frameReset, frameWindowUpdate:
			if h.streamID == 0 || h.length != 4 || h.flags != 0 {
				t.Fatalf("accepted %+v", h)
			}
		case framePing:
			if h.streamID != 0 || h.length != 8 || h.flags&^flagAck != 0 {
				t.Fatalf("accepted %+v", h)
			}
		case frameGoAway, frameSettings:
			if h.streamID != 0 || h.flags != 0 {
				t.Fatalf("accepted %+v", h)
			}
		default:
			t.Fatalf("accepted unknown type in %+v", h)
		}
	})
}

// FuzzSessionInput feeds a server session arbitrary bytes after a valid
// preface and settings, while its application accepts, reads, writes and
// closes streams. The session must neither panic nor hang: when the input
// ends it ends, with an error, and all its goroutines exit.
func FuzzSessionInput(f *testing.F) {
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	f.Add([]byte{})
	f.Add(cat(openFrame(1, TypeDefault, []byte("hello"), true)))
	f.Add(cat(openFrame(1, TypeDefault, []byte("hello"), false), dataFrame(1, []byte(" world"), true), windowFrame(1, 100)))
	f.Add(cat(openFrame(1, 3, nil, false), resetFrame(1, 0x42), openFrame(3, TypeDefault, make([]byte, 1500), false)))
	f.Add(cat(pingFrame(1, false), pingFrame(2, true), frame(frameGoAway, 0, 0, append(word(0), word(5)...))))
	f.Add(cat(openFrame(1, TypeDefault, []byte("x"), false), windowFrame(1, maxWindow), windowFrame(1, 0)))
	f.Add(cat(openFrame(1, TypeDefault, nil, false), openFrame(3, TypeDefault, nil, false), openFrame(5, TypeDefault, nil, false),
		openFrame(7, TypeDefault, nil, false), openFrame(9, TypeDefault, nil, false), openFrame(11, TypeDefault, nil, false)))
	f.Add(frame(frameData, flagOpen, 1, bytes.Repeat([]byte{0xff}, 11)))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	hello := appendSettings(appendPreface(nil), settings{maxIncomingStreams: 8, initialWindow: 1 << 10, maxFrameSize: 1 << 10})
	cfg := &Config{MaxIncomingStreams: 4, StreamWindow: 1 << 10, MaxFrameSize: 1 << 10, KeepAliveInterval: -1, HandshakeTimeout: 5 * time.Second}
	f.Fuzz(func(t *testing.T, data []byte) {
		server, peer := net.Pipe()
		res := make(chan sessionResult, 1)
		go func() {
			s, err := Server(server, cfg)
			res <- sessionResult{s: s, err: err}
		}()
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, peer)
			close(drained)
		}()
		peer.SetWriteDeadline(time.Now().Add(5 * time.Second))
		peer.Write(hello)
		r := <-res
		if r.err != nil {
			peer.Close()
			<-drained
			t.Fatalf("handshake: %v", r.err)
		}
		s := r.s
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the application: echo a little of each stream, then close it
			defer wg.Done()
			for {
				st, err := s.Accept(context.Background())
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer st.Close()
					st.SetDeadline(time.Now().Add(time.Second))
					b := make([]byte, 100)
					n, _ := st.Read(b)
					st.Write(b[:n])
				}()
			}
		}()
		peer.Write(data) // fails once the session gives up on the input
		peer.Close()
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			s.Kill()
			t.Fatal("session still running after its input ended")
		}
		if s.Err() == nil {
			t.Fatal("session ended without an error")
		}
		s.Kill()
		wg.Wait()
		<-drained
	})
}
