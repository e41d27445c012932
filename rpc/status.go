package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// statusError is a call's error: a gRPC status, and the session's error
// beneath it for errors.Is and errors.As.
type statusError struct {
	s     *status.Status
	cause error
}

func (e *statusError) Error() string {
	return fmt.Sprintf("rpc error: code = %s desc = %s", e.s.Code(), e.s.Message())
}

// GRPCStatus returns the error's status, for status.FromError and
// status.Code.
func (e *statusError) GRPCStatus() *status.Status { return e.s }

// Is matches what the session's error matches (mux.ErrRefused, say),
// except io.EOF and io.ErrUnexpectedEOF: to a stream's reader io.EOF means
// that the call ended with status OK, so errors.Is(err, io.EOF) must not
// hold for a call that failed because the connection did. The error has
// Is and As instead of Unwrap so that errors.Is cannot reach the EOF that
// a closed connection's error wraps.
func (e *statusError) Is(target error) bool {
	if target == io.EOF || target == io.ErrUnexpectedEOF {
		return false
	}
	return errors.Is(e.cause, target)
}

// As finds a type in the session's error (*mux.GoAwayError, say).
func (e *statusError) As(target any) bool { return errors.As(e.cause, target) }

// IsRetrySafe reports whether err proves that the other side never
// processed the call, so that sending it again cannot do its work twice.
// Such errors have code Unavailable.
func IsRetrySafe(err error) bool { return mux.IsRetrySafe(err) }

// ErrConnClosing is why calls fail once this side closes the session under
// them, with Peer.Close or Peer.Shutdown, or Server.Stop for its peers:
// those in flight and new ones fail with Canceled, and errors.Is(err,
// ErrConnClosing) holds, as gRPC's calls fail when their ClientConn
// closes.
var ErrConnClosing = errors.New("rpc: the connection is closing")

// errConnClosing returns the error of a call that failed because this side
// closed its Peer.
func errConnClosing() error {
	return &statusError{status.New(codes.Canceled, ErrConnClosing.Error()), ErrConnClosing}
}

// callError converts an error from the session under a call of p into the
// call's error: ErrConnClosing once this side has begun to close the
// session, else what sessionError says. One of a Client's sessions
// closes so only when the Client does: while the Client lives, it retires
// a session because the session went away, and a call that met that
// fails as the session's end says, retry-safe when it never ran, so
// that the Client sends it over another.
func (p *Peer) callError(ctx context.Context, byCtx bool, err error) error {
	if err := p.refusal(); err != nil {
		return err
	}
	if p.closing.Load() && (p.cfg.owner == nil || p.cfg.owner.ctx.Err() != nil) {
		return errConnClosing()
	}
	return sessionError(ctx, p.sess, byCtx, err)
}

// sessionError converts an error from sess, the session under a call,
// into the call's error: the context's when it ended, else Unavailable.
// byCtx says that the call's stream was aborted because ctx ended, or that
// the call has no stream yet. A call whose stream failed by itself, or
// whose session has ended, is Unavailable even if ctx has ended too: a
// handler's context ends with its session, and a call the handler made
// with it failed because the peer vanished, not because anyone cancelled
// it.
func sessionError(ctx context.Context, sess *mux.Session, byCtx bool, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && byCtx && sess.Err() == nil {
		return status.FromContextError(ctxErr).Err()
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	var tooLarge *errTooLarge
	switch {
	case errors.As(err, &tooLarge):
		return status.Error(codes.ResourceExhausted, tooLarge.Error())
	case errors.Is(err, errMalformed):
		return &statusError{status.New(codes.Internal, "malformed response: "+err.Error()), err}
	case mux.IsRetrySafe(err):
		return &statusError{status.New(codes.Unavailable, "call not processed, safe to retry: "+err.Error()), err}
	}
	return &statusError{status.New(codes.Unavailable, err.Error()), err}
}

// handlerStatus converts a handler's error into the status to send.
func handlerStatus(err error) *status.Status {
	if s, ok := status.FromError(err); ok {
		return s
	}
	return status.FromContextError(err)
}
