package rpc

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/muxrpc/muxrpc/mux"
)

// TestCallerGoneCancelsHandlerWithoutWatcher: on each transport, a
// handler's context ends when its caller gives up, and no goroutine per
// call waits on the stream meanwhile to notice: the transport's OnAbort
// reports the caller's close. On Smux, a goroutine blocked in Read per
// call used to watch for it.
func TestCallerGoneCancelsHandlerWithoutWatcher(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		const calls = 8
		started := make(chan struct{}, calls)
		ended := make(chan error, calls)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			started <- struct{}{}
			select {
			case <-ctx.Done():
				ended <- ctx.Err()
			case <-time.After(10 * time.Second):
				ended <- nil
			}
			return in, nil
		}})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}

		ctx, cancel := context.WithCancel(testCtx(t, 20*time.Second))
		defer cancel()
		errcs := make([]<-chan error, calls)
		for i := range errcs {
			errcs[i] = async(func() error {
				_, err := c.Unary(ctx, wrapperspb.String("x"))
				return err
			})
		}
		for range calls {
			await(t, started, 5*time.Second, "a handler to start")
		}
		if n := goroutinesIn("rpc.(*serverCall).endOfRequests"); n > 0 {
			t.Errorf("%d goroutines watch the calls' streams; want none", n)
		}
		cancel()
		for range calls {
			if err := await(t, ended, 5*time.Second, "a handler's context to end"); err != context.Canceled {
				t.Errorf("handler's context ended with %v; want context.Canceled", err)
			}
		}
		for _, errc := range errcs {
			if err := await(t, errc, 5*time.Second, "a call to return"); status.Code(err) != codes.Canceled {
				t.Errorf("call returned %v; want Canceled", err)
			}
		}
	})
}

// goroutinesIn returns the number of goroutines whose stack has a frame
// of the function named fn (package-qualified, without the module path).
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}
