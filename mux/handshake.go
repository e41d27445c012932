package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The handshake: each side sends its preface and SETTINGS at once, and
// reads the other's before the session starts.

// handshake sends this side's preface and settings and reads the peer's,
// both within the handshake timeout.
func (s *Session) handshake(ctx context.Context) error {
	hb := boundHandshake(ctx, s.conn, s.cfg.HandshakeTimeout)
	if tc, ok := s.conn.(*tls.Conn); ok {
		// First, so that its failure is reported as such.
		if err := tc.HandshakeContext(ctx); err != nil {
			return hb.fail(fmt.Errorf("mux: TLS handshake: %w", err))
		}
	}
	out := appendSettings(appendPreface(nil), settings{
		maxIncomingStreams: uint32(s.cfg.MaxIncomingStreams),
		initialWindow:      uint32(s.cfg.StreamWindow),
		maxFrameSize:       uint32(s.cfg.MaxFrameSize),
	})
	written := make(chan error, 1)
	go func() {
		n, err := s.conn.Write(out)
		s.bytesSent.Add(uint64(n))
		written <- err
	}()
	err := s.readHandshake()
	if errors.Is(err, ErrTransportMismatch) {
		// A muxrpc peer of the other transport: let it read this side's
		// preface, which tells it so.
		if werr := <-written; werr == nil {
			lingerClose(s.conn, lingerFor(s.cfg))
		}
		s.conn.Close()
		return hb.fail(err)
	}
	if err != nil {
		s.conn.Close() // unblocks the writer
	}
	if werr := <-written; err == nil && werr != nil {
		err = fmt.Errorf("mux: handshake: sending preface: %w", werr)
	}
	if err != nil {
		return hb.fail(err)
	}
	return hb.done()
}

// readHandshake reads the peer's preface and SETTINGS. The preface is read
// into a small array: a connection that sends nothing, or only part of a
// preface, costs no read buffer.
func (s *Session) readHandshake() error {
	var pre [prefaceLen]byte
	n, err := io.ReadFull(s.conn, pre[:])
	s.bytesRecv.Add(uint64(n))
	if err != nil {
		if n > 0 && !bytesArePrefixOfPreface(pre[:n]) {
			return peerSpeaks(pre[:n], Native, s.client)
		}
		if n == 0 {
			if err := closedBeforePreface(err); err != nil {
				return err
			}
		}
		return fmt.Errorf("mux: handshake: reading preface: %w", err)
	}
	if err := checkPreface(pre[:]); err != nil {
		if errors.Is(err, ErrNotMuxrpc) {
			return peerSpeaks(pre[:], Native, s.client)
		}
		return fmt.Errorf("mux: handshake: %w", bare{err})
	}
	s.br = newConnReader(s.conn, &s.heardAt, &s.bytesRecv)
	hb, err := s.br.Peek(frameHeaderLen)
	if err != nil {
		return fmt.Errorf("mux: handshake: reading settings: %w", err)
	}
	// The SETTINGS frame is bounded like every control frame: it must fit
	// the read buffer, and the peer cannot know this side's MAX_FRAME_SIZE.
	h, err := parseFrameHeader(hb, maxControlPayload)
	if err == nil && h.typ != frameSettings {
		err = fmt.Errorf("%w: first frame is %s, not SETTINGS", errFrame, h.typ)
	}
	if err != nil {
		return fmt.Errorf("mux: handshake: %w: %w", bare{ErrProtocol}, err)
	}
	s.br.Discard(frameHeaderLen)
	p, err := s.br.Peek(int(h.length))
	if err != nil {
		return fmt.Errorf("mux: handshake: reading settings: %w", err)
	}
	s.peer, err = parseSettings(p)
	if err != nil {
		return fmt.Errorf("mux: handshake: %w: %w", bare{ErrProtocol}, err)
	}
	s.br.Discard(int(h.length))
	return nil
}

func bytesArePrefixOfPreface(b []byte) bool {
	want := appendPreface(nil)
	return len(b) <= len(want) && string(want[:len(b)]) == string(b)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A handshakeBound ends a handshake on time: it sets the connection's
// deadline to the handshake timeout, or to ctx's deadline if that is
// earlier, and to a past time as soon as ctx ends. A handshake, on either
// transport, ends with done or fail.
type handshakeBound struct {
	ctx         context.Context
	conn        net.Conn
	ctxDeadline bool        // the connection's deadline is ctx's
	stop        func() bool // disarms the reaction to ctx's end
}

// boundHandshake sets conn's deadline for a handshake bounded by timeout
// and ctx.
func boundHandshake(ctx context.Context, conn net.Conn, timeout time.Duration) handshakeBound {
	deadline := time.Now().Add(timeout)
	hb := handshakeBound{ctx: ctx, conn: conn}
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, hb.ctxDeadline = d, true
	}
	conn.SetDeadline(deadline)
	hb.stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return hb
}

// done ends a handshake that succeeded: it clears the connection's
// deadline. If ctx ended meanwhile, the past deadline its end sets may
// land on the connection at any moment, even after the clearing, so the
// handshake fails instead, with ctx's error.
func (hb handshakeBound) done() error {
	if !hb.stop() {
		return fmt.Errorf("mux: handshake: %w", hb.ctx.Err())
	}
	hb.conn.SetDeadline(time.Time{})
	return nil
}

// fail ends a handshake that failed with err, and returns the error to
// report: ctx's when ctx's end or deadline is what cut the handshake short.
func (hb handshakeBound) fail(err error) error {
	hb.stop()
	if hb.ctxDeadline && isTimeout(err) {
		// The connection's deadline was ctx's: ctx ends now, if its timer
		// has not fired yet.
		<-hb.ctx.Done()
	}
	if hb.ctx.Err() != nil {
		return fmt.Errorf("mux: handshake: %w", hb.ctx.Err())
	}
	return err
}
