package mux

import (
	"context"
	"net"
)

// NetListener returns a net.Listener whose Accept returns the peer's
// streams of type t, so that a net/http server, say, serves over the
// session. Closing it does not close the session.
func (s *Session) NetListener(t StreamType) net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamListener{sess: s, typ: t, ctx: ctx, cancel: cancel}
}

// DialContext opens a stream of TypeNet and returns it as a net.Conn; the
// network and address are ignored, since the session has one peer. Its
// signature fits http.Transport.DialContext, so an HTTP client can reach a
// server on the peer's NetListener(TypeNet).
func (s *Session) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	st, err := s.OpenType(ctx, TypeNet)
	if err != nil {
		return nil, err
	}
	return st, nil
}

type streamListener struct {
	sess   *Session
	typ    StreamType
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *streamListener) Accept() (net.Conn, error) {
	st, err := l.sess.AcceptType(l.ctx, l.typ)
	if err != nil {
		if l.ctx.Err() != nil {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	return st, nil
}

func (l *streamListener) Close() error {
	l.cancel()
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.sess.LocalAddr() }
