package rpc

import (
	"context"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestSmokeCallback(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 10*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &calling{})
		addr := serve(t, srv)

		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
		p := dial(t, addr, WithServices(callbacks), muxOpt(tr))
		out, err := echoClient{p}.Unary(ctx, wrapperspb.String("hi"))
		if err != nil {
			t.Fatal(err)
		}
		if out.Value != "server(client:hi)" {
			t.Fatalf("got %q", out.Value)
		}
	})
}

// calling answers by calling the caller back.
type calling struct{ echoImpl }

func (c *calling) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	back, err := echoClient{PeerFromContext(ctx)}.Unary(ctx, in)
	if err != nil {
		return nil, err
	}
	return wrapperspb.String("server(" + back.Value + ")"), nil
}
