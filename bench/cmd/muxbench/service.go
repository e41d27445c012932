package main

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
)

// benchServer is the behaviour of the Bench service, the same for every
// framework: each adapter's handlers only translate its stream types to
// these functions.
type benchServer struct {
	// served, if set, counts the Unary calls answered (a fleet's servers,
	// W9 and W10).
	served *atomic.Int64
}

// unary is Unary: the request is the answer.
func (b benchServer) unary(in *benchpb.Payload) *benchpb.Payload {
	if b.served != nil {
		b.served.Add(1)
	}
	return in
}

// serverStream is ServerStream: req.Count messages (0: until ctx ends or
// send fails) whose data is the first req.Size bytes of the pattern, each
// a new message, since frameworks may hold a sent message after Send
// returns; the pattern itself is shared and never written.
func (benchServer) serverStream(ctx context.Context, req *benchpb.Payload, send func(*benchpb.Payload) error) error {
	data, err := patternOf(req.Size)
	if err != nil {
		return err
	}
	for k := int64(0); req.Count == 0 || k < req.Count; k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := send(&benchpb.Payload{Data: data, Count: k}); err != nil {
			return err
		}
	}
	return nil
}

// clientStream is ClientStream: the count and size of what arrived.
func (benchServer) clientStream(recv func() (*benchpb.Payload, error)) (*benchpb.Payload, error) {
	var sum benchpb.Payload
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return &sum, nil
		}
		if err != nil {
			return nil, err
		}
		sum.Count++
		sum.Size += int64(len(m.Data))
	}
}

// bidi is Bidi: each message is answered with itself.
func (benchServer) bidi(recv func() (*benchpb.Payload, error), send func(*benchpb.Payload) error) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := send(m); err != nil {
			return err
		}
	}
}

// callbackService is the behaviour of the Callback service the client
// serves in W7: an echo.
type callbackService struct{}

func (callbackService) unary(in *benchpb.Payload) *benchpb.Payload { return in }
