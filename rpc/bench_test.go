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

// benchPeerWith returns a peer connected to a server of impl on transport
// tr, both torn down when the benchmark ends.
func benchPeerWith(b *testing.B, tr mux.Transport, impl echoServer) echoClient {
	srv := NewServer(muxOpt(tr))
	srv.RegisterService(&echoDesc, impl)
	addr := serve(b, srv)
	return echoClient{dial(b, addr, muxOpt(tr))}
}

// BenchmarkUnaryLarge measures a unary echo of a 1 MiB message by four
// concurrent callers on one connection; the handler returns its request,
// so that the allocations (both ends) are the framework's and the
// unmarshalling's. The bytes count one direction.
func BenchmarkUnaryLarge(b *testing.B) {
	const size, callers = 1 << 20, 4
	echo := &funcEcho{unary: func(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return in, nil
	}}
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			c := benchPeerWith(b, tr, echo)
			ctx := context.Background()
			req := wrapperspb.String(string(make([]byte, size)))
			b.SetBytes(size)
			b.ReportAllocs()
			var wg sync.WaitGroup
			work := make(chan struct{}, b.N)
			for range b.N {
				work <- struct{}{}
			}
			close(work)
			b.ResetTimer()
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						resp, err := c.Unary(ctx, req)
						if err != nil {
							b.Error(err)
							return
						}
						if len(resp.Value) != size {
							b.Errorf("echoed %d bytes, want %d", len(resp.Value), size)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkServerStreamMany measures receiving one 1 KiB message of a
// server stream of many: each op is one message, the stream's share of
// setup spread over streamLen of them.
func BenchmarkServerStreamMany(b *testing.B) {
	const streamLen = 10000
	msg := wrapperspb.String(string(make([]byte, 1022))) // 1 KiB encoded, with its tag and length
	echo := &funcEcho{serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
		for range len(in.Value) {
			if err := s.Send(msg); err != nil {
				return err
			}
		}
		return nil
	}}
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			c := benchPeerWith(b, tr, echo)
			ctx := context.Background()
			b.SetBytes(1 << 10)
			b.ReportAllocs()
			for left := b.N; left > 0; {
				n := min(left, streamLen)
				left -= n
				s, err := c.ServerStream(ctx, wrapperspb.String(string(make([]byte, n))))
				if err != nil {
					b.Fatal(err)
				}
				got := 0
				for {
					if _, err := s.Recv(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
					got++
				}
				if got != n {
					b.Fatalf("received %d messages, want %d", got, n)
				}
			}
		})
	}
}

// BenchmarkClientVsPeer measures the same unary call (64-byte request and
// response, one caller) on a bare Peer and through a Client whose one
// session goes to the same server, so that the difference is the
// Client's: picking a session and its bookkeeping of the call.
// Allocations count both ends.
func BenchmarkClientVsPeer(b *testing.B) {
	srv := NewServer()
	srv.RegisterService(&echoDesc, &echoImpl{name: "s"})
	addr := serve(b, srv)
	ctx := context.Background()
	req := wrapperspb.String(string(make([]byte, 62)))
	run := func(b *testing.B, c echoClient) {
		if _, err := c.Unary(ctx, req); err != nil { // the Client's first call connects
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Unary(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("peer", func(b *testing.B) { run(b, echoClient{dial(b, addr)}) })
	b.Run("client", func(b *testing.B) {
		cl, err := NewClient("passthrough:///" + addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		run(b, echoClient{cl})
	})
}
