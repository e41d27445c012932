package rpc

import (
	"net"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestServeSessionResult serves one connection with ServeConn: it returns
// nil when the client closes its Peer, and the session's error when the
// client's connection just drops.
func TestServeSessionResult(t *testing.T) {
	for _, tc := range []struct {
		name    string
		end     func(p *Peer)
		wantErr bool
	}{
		{"client Close", func(p *Peer) { p.Close() }, false},
		{"connection dropped", func(p *Peer) { p.Session().Kill() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			srv := NewServer()
			srv.RegisterService(&echoDesc, &echoImpl{name: "s"})
			served := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					served <- err
					return
				}
				served <- srv.ServeConn(c)
			}()
			sess, err := mux.Dial(ctx, "tcp", ln.Addr().String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			p := NewPeer(sess)
			defer p.Close()
			if _, err := (echoClient{p}).Unary(ctx, wrapperspb.String("x")); err != nil {
				t.Fatal(err)
			}
			tc.end(p)
			select {
			case err := <-served:
				if (err != nil) != tc.wantErr {
					t.Fatalf("ServeConn returned %v; want an error: %v", err, tc.wantErr)
				}
			case <-ctx.Done():
				t.Fatal("ServeConn did not return after the client left")
			}
		})
	}
}
