package mux

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"time"

	"github.com/xtaci/smux"
)

// The Smux transport: sessions that speak github.com/xtaci/smux protocol
// version 2 underneath the same Session and Stream API. Each side first
// sends its stream limit on a settings stream, and a session starts only
// once the peer's has arrived: that is the transport's handshake. Each
// stream then starts with its type and, the other way, an admission
// status. So admission (OpenType waits for a slot, ErrRefused past the
// limit), accept queues, Close's drain and the session's end are shared
// with the native engine; frames, flow control and keepalive's pings are
// smux's (giving up on a silent peer is this package's: smuxKeepAlive).
// What smux cannot give is refused plainly (ErrUnsupported): Reset,
// GoAway, Ping and CloseWrite.
//
// This package also follows the smux frames as they pass (see smuxConn),
// for what smux does not tell: which streams the peer has closed, so that
// writing to one fails at once instead of waiting for window forever, and
// so that OnAbort's function runs as the peer's close arrives.

// newSmuxSession runs the Smux transport's handshake on conn and starts the
// session. It returns once the peer's settings have arrived; it fails after
// the handshake timeout, or when ctx ends, first.
func newSmuxSession(ctx context.Context, conn net.Conn, c Config, client bool, s *Session) (*Session, error) {
	sc, err := smuxConfig(c)
	if err != nil {
		return nil, err
	}
	hb := boundHandshake(ctx, conn, c.HandshakeTimeout)
	rw := newSmuxConn(conn, s, client)
	if err := s.smuxHandshake(ctx, rw, sc, client); err != nil {
		if s.smux != nil {
			s.smux.Close()
		}
		return nil, hb.fail(err)
	}
	rw.sess.Store(s) // from now on a failed read ends the session
	// smux's writes before this one went straight to the connection and
	// have returned; from now on they are batched.
	rw.fl.Store(newSmuxFlusher(conn, s))
	err = hb.done()
	if err == nil {
		// smux reads all along: the handshake's deadline may have ended
		// the session just as the handshake succeeded.
		err = s.Err()
	}
	if err != nil {
		s.smux.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.smuxAcceptLoop()
	if c.KeepAliveInterval > 0 {
		s.heardAt.Store(now())
		s.startSmuxKeepAlive()
	}
	return s, nil
}

// startSmuxKeepAlive ends the session with ErrKeepAliveTimeout once
// nothing has been read from the peer for KeepAliveTimeout; smux only
// sends the pings (NOP frames). smux's own check looks, once per timeout,
// for a frame header read since its last look, and would end a live
// session on a link that takes longer than the timeout to carry one frame
// of up to 64 KiB: bytes arriving prove the peer alive, not only whole
// frames.
func (s *Session) startSmuxKeepAlive() {
	timeout, every := s.cfg.KeepAliveTimeout, s.cfg.KeepAliveInterval/4
	s.startTimer(every, func() time.Duration {
		if time.Since(time.Unix(0, s.heardAt.Load())) >= timeout {
			s.fail(ErrKeepAliveTimeout)
			return 0
		}
		return every
	})
}

// smuxConfig returns the smux configuration for c.
func smuxConfig(c Config) (*smux.Config, error) {
	sc := smux.DefaultConfig()
	sc.Version = 2
	sc.MaxFrameSize = min(c.MaxFrameSize, 65535)
	sc.MaxStreamBuffer = c.StreamWindow
	// One receive budget for the whole session freezes every stream when it
	// runs out (smux's head-of-line freeze), so size it for the worst case:
	// every admitted stream holding a full first window of 256 KiB.
	sc.MaxReceiveBuffer = max(sc.MaxReceiveBuffer, min(max(c.StreamWindow, 256<<10)*(c.MaxIncomingStreams+1), 1<<30))
	if c.KeepAliveInterval < 0 {
		sc.KeepAliveDisabled = true
	} else {
		// smux pings; the session gives up itself, see smuxKeepAlive.
		sc.KeepAliveInterval, sc.KeepAliveTimeout = c.KeepAliveInterval, math.MaxInt64
	}
	if err := smux.VerifyConfig(sc); err != nil {
		return nil, fmt.Errorf("mux: config for the Smux transport: %w", err)
	}
	return sc, nil
}

// smuxHandshake starts smux on rw, sends this side's settings and reads
// the peer's, all under the connection's handshake deadline. The server
// starts smux only once the client's settings have arrived (see
// readSmuxHello), so that a connection that sends nothing, or too little,
// costs no smux session.
func (s *Session) smuxHandshake(ctx context.Context, rw *smuxConn, sc *smux.Config, client bool) error {
	// With no preface exchange to drive it, a TLS handshake would wait for
	// the first stream; finish it now, so that its failure fails here and
	// its state is known from the start.
	if tc, ok := rw.Conn.(*tls.Conn); ok {
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("mux: TLS handshake: %w", err)
		}
	}
	if !client {
		hello, err := readSmuxHello(rw.Conn)
		if errors.Is(err, ErrTransportMismatch) {
			// A client of the native transport: a smux frame, NOP, tells
			// it what this side speaks (see peerSpeaks).
			if _, werr := rw.Conn.Write(smuxNOPFrame[:]); werr == nil {
				lingerClose(rw.Conn, lingerFor(s.cfg))
			}
		}
		if err != nil {
			return err
		}
		s.bytesRecv.Add(uint64(len(hello))) // read from the connection here, replayed to smux below
		rw.replay = hello
	}
	t := &smuxSession{conn: rw, streams: make(map[uint32]smuxEntry)}
	rw.in.on, rw.out.on = t.peerFrame, t.ownFrame
	var err error
	t.Session, err = startSmux(rw, sc, client)
	if err != nil {
		return fmt.Errorf("mux: starting smux: %w", err)
	}
	s.smux = t
	if err := s.smuxSendSettings(); err != nil {
		// A peer that ended the connection may have said why before: a TLS
		// alert refusing this side's certificate, say, which a write can
		// miss once the peer's reset arrives. The read that follows finds
		// it, as the native handshake's does; the deadline bounds it.
		if _, rerr := s.smuxReadSettings(); rerr != nil {
			return rw.firstBytesError(rerr)
		}
		return fmt.Errorf("mux: handshake: sending settings over smux: %w", err)
	}
	limit, err := s.smuxReadSettings()
	if err != nil {
		return rw.firstBytesError(err)
	}
	s.peer = settings{maxIncomingStreams: limit, initialWindow: uint32(s.cfg.StreamWindow), maxFrameSize: uint32(sc.MaxFrameSize)}
	return nil
}

// The Smux transport's own additions to smux, in each stream's first
// bytes: the opener sends the stream's type (a uvarint), and the acceptor
// answers with an admission status byte in front of its first byte, or
// alone before closing a stream it refuses. A stream of the reserved type
// smuxSettingsType carries a side's settings instead: its limit of
// incoming streams as a uvarint. It is the first stream each side opens,
// and the only one of that type.
const (
	smuxAdmitted     byte       = 0
	smuxRefused      byte       = 1
	smuxSettingsType StreamType = 1<<32 - 1
)

// smuxRefusedStatus is what a refused stream gets; smux may keep it queued
// after a Write times out, so it is never written to.
var smuxRefusedStatus = []byte{smuxRefused}

// errSmuxPeerClosed is Write's error on a stream the peer has closed.
var errSmuxPeerClosed = fmt.Errorf("mux: write on a stream the peer closed: %w", io.EOF)

// smuxSendSettings tells the peer this side's stream limit, so that its
// OpenType waits for a free slot as on the native transport.
func (s *Session) smuxSendSettings() error {
	sms, err := s.smux.OpenStream()
	if err != nil {
		return err
	}
	runtime.SetFinalizer(sms, nil)
	b := binary.AppendUvarint(nil, uint64(smuxSettingsType))
	b = binary.AppendUvarint(b, uint64(s.cfg.MaxIncomingStreams))
	_, err = sms.Write(b)
	s.smux.closeStream(sms)
	return err
}

// smuxReadSettings takes the peer's settings stream, the first stream it
// opens, and returns the stream limit the peer announces.
func (s *Session) smuxReadSettings() (uint32, error) {
	sms, err := s.smux.AcceptStream()
	if err != nil {
		if errors.Is(err, smux.ErrInvalidProtocol) {
			err = fmt.Errorf("%w: %w", bare{ErrProtocol}, err)
		}
		return 0, fmt.Errorf("mux: handshake: waiting for the peer's settings: %w", err)
	}
	runtime.SetFinalizer(sms, nil)
	defer s.smux.closeStream(sms)
	r := byteReader{sms}
	t, err := binary.ReadUvarint(r)
	if err == nil && t != uint64(smuxSettingsType) {
		return 0, fmt.Errorf("mux: handshake: %w: the peer's first stream has type %d, not its settings", bare{ErrProtocol}, t)
	}
	var limit uint64
	if err == nil {
		limit, err = binary.ReadUvarint(r)
	}
	if err != nil {
		return 0, fmt.Errorf("mux: handshake: reading the peer's settings: %w", err)
	}
	return uint32(min(limit, maxStreamID)), nil
}

// What this package reads of smux's wire format (smux's frame.go): an
// 8-byte header of version, command, little-endian payload length and
// stream id, then the payload.
const (
	smuxVersion   = 2
	smuxHeaderLen = 8
	smuxSYN       = 0 // a stream opens
	smuxFIN       = 1 // the sender closed the stream
	smuxPSH       = 2 // data
	smuxNOP       = 3 // keepalive
)

// smuxNOPFrame is a smux frame that does nothing: what the server sends a
// native client, to tell it what this side speaks.
var smuxNOPFrame = [smuxHeaderLen]byte{smuxVersion, smuxNOP}

// smuxHelloMax bounds what readSmuxHello reads: ample for the frames up to
// the client's settings, which take at most 31 bytes.
const smuxHelloMax = 64

// readSmuxHello reads the client's first frames, up to the first data frame
// of its first stream, which carries its settings, and returns them for
// smux to read again. It reads them into a small array, so that a silent
// or slow client costs nothing more until they are in; and it checks them
// enough to tell that the peer speaks smux version 2.
func readSmuxHello(r io.Reader) ([]byte, error) {
	var buf [smuxHelloMax]byte
	n := 0
	opened := false
	var sid uint32
	for {
		if n+smuxHeaderLen > len(buf) {
			return nil, fmt.Errorf("mux: handshake: %w: no settings in the peer's first %d bytes", bare{ErrProtocol}, n)
		}
		h := buf[n : n+smuxHeaderLen]
		k, err := io.ReadFull(r, h)
		if k > 0 && h[0] != smuxVersion {
			return nil, peerSpeaks(buf[:n+k], Smux, false)
		}
		if n+k == 0 {
			if err := closedBeforePreface(err); err != nil {
				return nil, err
			}
		}
		if err != nil {
			return nil, fmt.Errorf("mux: handshake: reading the peer's settings: %w", err)
		}
		n += smuxHeaderLen
		cmd, length, id := h[1], int(binary.LittleEndian.Uint16(h[2:])), binary.LittleEndian.Uint32(h[4:])
		switch {
		case cmd == smuxNOP && length == 0:
		case cmd == smuxSYN && length == 0 && !opened:
			opened, sid = true, id
		case cmd == smuxPSH && opened && id == sid && length > 0 && n+length <= len(buf):
			if _, err := io.ReadFull(r, buf[n:n+length]); err != nil {
				return nil, fmt.Errorf("mux: handshake: reading the peer's settings: %w", err)
			}
			return append([]byte(nil), buf[:n+length]...), nil
		default:
			return nil, fmt.Errorf("mux: handshake: %w: smux frame %x before the peer's settings", bare{ErrProtocol}, h)
		}
	}
}
