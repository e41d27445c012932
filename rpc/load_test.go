package rpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestConcurrentUnaryCalls makes 5,000 unary calls at once on one peer and
// checks every answer: each call gets its own response, none is lost or
// crossed with another, whatever the server's concurrency limit (the
// default, 1000) makes callers wait.
func TestConcurrentUnaryCalls(t *testing.T) {
	const calls = 5000
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 60*time.Second)
		var inFlight, peak atomic.Int64
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond) // let calls overlap
			return wrapperspb.String("server:" + in.Value), nil
		}})
		p := dial(t, serve(t, srv), muxOpt(tr))

		start := make(chan struct{})
		var wg sync.WaitGroup
		var failed atomic.Int64
		errs := make(chan error, 10)
		for i := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				v := fmt.Sprint("v", i)
				out, err := echoClient{p}.Unary(ctx, wrapperspb.String(v))
				if err == nil && out.Value != "server:"+v {
					err = fmt.Errorf("call %d: got %q, want %q", i, out.Value, "server:"+v)
				}
				if err != nil {
					failed.Add(1)
					select {
					case errs <- fmt.Errorf("call %d: %w", i, err):
					default:
					}
				}
			}()
		}
		began := time.Now()
		close(start)
		wg.Wait()
		elapsed := time.Since(began)
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d of %d calls failed", n, calls)
		}
		t.Logf("%d concurrent calls in %v; at most %d in handlers at once", calls, elapsed, peak.Load())
		if peak.Load() < 2 {
			t.Errorf("calls never overlapped in the server (peak %d)", peak.Load())
		}
	})
}
