package rpc

import (
	"context"
	"errors"
	"fmt"

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

func (e *statusError) Unwrap() error { return e.cause }

// IsRetrySafe reports whether err proves that the other side never
// processed the call, so that sending it again cannot do its work twice.
// Such errors have code Unavailable.
func IsRetrySafe(err error) bool { return mux.IsRetrySafe(err) }

// sessionError converts an error from the session under a call into the
// call's error: the context's when it ended, else Unavailable.
func sessionError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
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
