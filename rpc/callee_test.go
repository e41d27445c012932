package rpc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestHandlerRecvAfterReturnTouchesNoPooledBuffer has bidi handlers
// return while a goroutine they started is still receiving, as gRPC
// allows, while other calls of the same peer run big unary echoes. The
// call's read buffer goes back to a pool when the call ends: the
// goroutine must not read into it or decode from it after that (the race
// detector sees it if it does), and every echo answers intact.
func TestHandlerRecvAfterReturnTouchesNoPooledBuffer(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 60*time.Second)
		request := "bidi:" + strings.Repeat("b", 16<<10)
		var readers sync.WaitGroup
		corrupt := make(chan string, 1)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					m, err := s.Recv()
					if err != nil {
						return
					}
					if m.Value != request {
						select {
						case corrupt <- fmt.Sprintf("%.40q... (%d bytes)", m.Value, len(m.Value)):
						default:
						}
					}
				}
			}()
			time.Sleep(rand.N(2 * time.Millisecond))
			return status.Error(codes.Aborted, "returned while a goroutine receives")
		}})
		c := echoClient{dial(t, serve(t, srv), muxOpt(tr))}

		echoCtx, stopEchoes := context.WithCancel(ctx)
		big := strings.Repeat("u", 32<<10)
		var echoes sync.WaitGroup
		echoErr := make(chan error, 4)
		for range 4 {
			echoes.Add(1)
			go func() {
				defer echoes.Done()
				for echoCtx.Err() == nil {
					out, err := c.Unary(echoCtx, wrapperspb.String(big))
					if echoCtx.Err() != nil {
						return
					}
					if err != nil || out.Value != "server:"+big {
						echoErr <- fmt.Errorf("echo: %v (%d bytes back)", err, len(out.GetValue()))
						return
					}
				}
			}()
		}
		for range 100 {
			s, err := c.Bidi(ctx)
			if err != nil {
				t.Fatal(err)
			}
			sent := async(func() error {
				for {
					if err := s.Send(wrapperspb.String(request)); err != nil {
						return err
					}
				}
			})
			_, err = s.Recv()
			wantStatus(t, err, codes.Aborted, "returned while a goroutine receives")
			await(t, sent, 10*time.Second, "the bidi sender to stop")
		}
		stopEchoes()
		echoes.Wait()
		readersDone := make(chan struct{})
		go func() { readers.Wait(); close(readersDone) }()
		await(t, readersDone, 10*time.Second, "the handlers' receiving goroutines to return")
		select {
		case err := <-echoErr:
			t.Fatal(err)
		case m := <-corrupt:
			t.Fatalf("a receiving goroutine decoded a corrupt request: %s", m)
		default:
		}
	})
}
