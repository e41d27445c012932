package rpc

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// benchPeer returns a peer connected to a server of echoImpl on transport
// tr, both torn down when the benchmark ends.
func benchPeer(b *testing.B, tr mux.Transport) echoClient {
	srv := NewServer(muxOpt(tr))
	srv.RegisterService(&echoDesc, &echoImpl{name: "s"})
	addr := serve(b, srv)
	return echoClient{dial(b, addr, muxOpt(tr))}
}

// BenchmarkUnary measures one unary call with a 64-byte request and
// response; allocations count both ends.
func BenchmarkUnary(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			c := benchPeer(b, tr)
			ctx := context.Background()
			req := wrapperspb.String(string(make([]byte, 62)))
			b.Run("callers=1", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.Unary(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("callers=64", func(b *testing.B) {
				b.ReportAllocs()
				var wg sync.WaitGroup
				work := make(chan struct{}, b.N)
				for range b.N {
					work <- struct{}{}
				}
				close(work)
				b.ResetTimer()
				for range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range work {
							if _, err := c.Unary(ctx, req); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		})
	}
}

// BenchmarkServerStream measures receiving one 64-byte message of a
// server-streaming call that sends three.
func BenchmarkServerStream(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			c := benchPeer(b, tr)
			ctx := context.Background()
			req := wrapperspb.String(string(make([]byte, 62)))
			b.ReportAllocs()
			for b.Loop() {
				s, err := c.ServerStream(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := s.Recv(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
