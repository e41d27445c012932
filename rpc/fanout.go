package rpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"
)

// FanOutOptions bound a FanOut.
type FanOutOptions struct {
	// Concurrency is how many calls are in flight at most; 0 or less
	// means 64.
	Concurrency int
	// Timeout bounds each call, on top of FanOut's context, so that a
	// member that does not answer costs its own result and a slot for
	// Timeout, not the whole FanOut; 0 leaves only the context.
	Timeout time.Duration
}

// defaultFanOut is FanOutOptions' default Concurrency.
const defaultFanOut = 64

// A FanOutResult is one member's part of a FanOut.
type FanOutResult[T any] struct {
	Name  string // the member's name: its Identity's
	Peer  *Peer  // the session called
	Reply T      // what call returned
	Err   error  // what call returned; a status error from the call, DeadlineExceeded past Timeout
}

// FanOut calls every member of f, as the Fleet has them when FanOut
// starts, each with call and its own context (ctx, bounded by
// opts.Timeout), at most opts.Concurrency at once, and returns one
// result per member, in the order of the members' names, once every call
// has returned. A member whose turn comes after ctx has ended is not
// called: its result has ctx's error as a status. call gets the member's
// Peer as cc, so that generated clients work on it:
//
//	results := rpc.FanOut(ctx, fleet, rpc.FanOutOptions{Timeout: time.Second},
//		func(ctx context.Context, cc rpc.ClientConnInterface) (*pb.Status, error) {
//			return pb.NewAgentClient(cc).Status(ctx, &pb.StatusRequest{})
//		})
//
// The calls do not move to another member if their session goes away, as
// calls to the Fleet do: each result is that member's. A call must return
// once its context ends, as calls made through cc do, for FanOut to be
// bounded by ctx and Timeout.
func FanOut[T any](ctx context.Context, f *Fleet, opts FanOutOptions, call func(ctx context.Context, cc ClientConnInterface) (T, error)) []FanOutResult[T] {
	ms := f.set.members.Load()
	results := make([]FanOutResult[T], 0, len(ms.list))
	for _, m := range ms.list {
		if !m.peer.goingAway() {
			results = append(results, FanOutResult[T]{Name: m.name, Peer: m.peer})
		}
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = defaultFanOut
	}
	var next atomic.Int64 // the index of the next result to fill
	var wg sync.WaitGroup
	for range min(workers, len(results)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(results) {
					return
				}
				r := &results[i]
				r.Reply, r.Err = callMember(ctx, r.Peer, opts.Timeout, call)
			}
		})
	}
	wg.Wait()
	return results
}

// callMember makes one of FanOut's calls, unless ctx has ended.
func callMember[T any](ctx context.Context, p *Peer, timeout time.Duration, call func(context.Context, ClientConnInterface) (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, status.FromContextError(err).Err()
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return call(ctx, p)
}
