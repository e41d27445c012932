package mux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// The handshake: each side sends its preface and SETTINGS at once, and
// reads the other's before the session starts.

// handshake sends this side's preface and settings and reads the peer's,
// both within the handshake timeout.
func (s *Session) handshake(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	ctxDeadline := false // the connection's deadline is ctx's
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	s.conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	out := appendSettings(appendPreface(nil), settings{
		maxIncomingStreams: uint32(s.cfg.MaxIncomingStreams),
		initialWindow:      uint32(s.cfg.StreamWindow),
		maxFrameSize:       uint32(s.cfg.MaxFrameSize),
	})
	written := make(chan error, 1)
	go func() {
		_, err := s.conn.Write(out)
		written <- err
	}()
	err := s.readHandshake()
	if err != nil {
		s.conn.Close() // unblocks the writer
	}
	if werr := <-written; err == nil && werr != nil {
		err = fmt.Errorf("mux: handshake: sending preface: %w", werr)
	}
	if err != nil {
		if ctxDeadline && isTimeout(err) {
			// The connection's deadline was ctx's: ctx ends now, if its
			// timer has not fired yet.
			<-ctx.Done()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("mux: handshake: %w", ctx.Err())
		}
		return err
	}
	s.conn.SetDeadline(time.Time{})
	return nil
}

func (s *Session) readHandshake() error {
	s.br = bufio.NewReaderSize(receiver{s}, readBufferSize)
	b, err := s.br.Peek(prefaceLen)
	if err != nil {
		if len(b) > 0 && !bytesArePrefixOfPreface(b) {
			return fmt.Errorf("mux: handshake: %w: got %q", ErrNotMuxrpc, b)
		}
		return fmt.Errorf("mux: handshake: reading preface: %w", err)
	}
	if err := checkPreface(b); err != nil {
		return fmt.Errorf("mux: handshake: %w", err)
	}
	s.br.Discard(prefaceLen)
	hb, err := s.br.Peek(frameHeaderLen)
	if err != nil {
		return fmt.Errorf("mux: handshake: reading settings: %w", err)
	}
	h, err := parseFrameHeader(hb, maxControlPayload)
	if err == nil && h.typ != frameSettings {
		err = fmt.Errorf("%w: first frame is %s, not SETTINGS", errFrame, h.typ)
	}
	if err != nil {
		return fmt.Errorf("mux: handshake: %w: %w", ErrProtocol, err)
	}
	s.br.Discard(frameHeaderLen)
	p, err := s.br.Peek(int(h.length))
	if err != nil {
		return fmt.Errorf("mux: handshake: reading settings: %w", err)
	}
	s.peer, err = parseSettings(p)
	if err != nil {
		return fmt.Errorf("mux: handshake: %w: %w", ErrProtocol, err)
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
