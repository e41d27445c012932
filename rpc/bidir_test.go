package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// bouncer serves test.Echo by calling the caller back: each handler makes
// a call of its own kind to the service the caller exposed, on the same
// session, and wraps the answer in "server(...)".
type bouncer struct{}

func backTo(ctx context.Context) (echoClient, error) {
	p := PeerFromContext(ctx)
	if p == nil {
		return echoClient{}, status.Error(codes.Internal, "no Peer in the handler's context")
	}
	return echoClient{p}, nil
}

func wrap(s string) *wrapperspb.StringValue { return wrapperspb.String("server(" + s + ")") }

func (bouncer) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	back, err := backTo(ctx)
	if err != nil {
		return nil, err
	}
	out, err := back.Unary(ctx, in)
	if err != nil {
		return nil, err
	}
	return wrap(out.Value), nil
}

func (bouncer) ServerStream(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
	back, err := backTo(s.Context())
	if err != nil {
		return err
	}
	bs, err := back.ServerStream(s.Context(), in)
	if err != nil {
		return err
	}
	for {
		m, err := bs.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(wrap(m.Value)); err != nil {
			return err
		}
	}
}

func (bouncer) ClientStream(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	back, err := backTo(s.Context())
	if err != nil {
		return err
	}
	bs, err := back.ClientStream(s.Context())
	if err != nil {
		return err
	}
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := bs.Send(in); err != nil {
			return err
		}
	}
	out, err := bs.CloseAndRecv()
	if err != nil {
		return err
	}
	return s.SendAndClose(wrap(out.Value))
}

func (bouncer) Bidi(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	back, err := backTo(s.Context())
	if err != nil {
		return err
	}
	bs, err := back.Bidi(s.Context())
	if err != nil {
		return err
	}
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			bs.CloseSend()
			if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
				return status.Errorf(codes.Internal, "callback bidi ended with %v, want io.EOF", err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if err := bs.Send(in); err != nil {
			return err
		}
		out, err := bs.Recv()
		if err != nil {
			return err
		}
		if err := s.Send(wrap(out.Value)); err != nil {
			return err
		}
	}
}

// TestCallsBothDirections makes every kind of call from client to server,
// and inside each handler the server makes the same kind of call back to
// the service the client exposed with WithServices, on the same session:
// the answers prove both legs ran.
func TestCallsBothDirections(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, bouncer{})
		addr := serve(t, srv)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
		c := echoClient{dial(t, addr, WithServices(callbacks), muxOpt(tr))}

		t.Run("unary", func(t *testing.T) {
			out, err := c.Unary(ctx, wrapperspb.String("hi"))
			if err != nil {
				t.Fatal(err)
			}
			if out.Value != "server(client:hi)" {
				t.Fatalf("got %q", out.Value)
			}
		})
		t.Run("serverStream", func(t *testing.T) {
			s, err := c.ServerStream(ctx, wrapperspb.String("hi"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, m.Value)
			}
			if want := "server(client:hi) server(client:hi) server(client:hi)"; strings.Join(got, " ") != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
		t.Run("clientStream", func(t *testing.T) {
			s, err := c.ClientStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range []string{"a", "b", "c"} {
				if err := s.Send(wrapperspb.String(v)); err != nil {
					t.Fatal(err)
				}
			}
			out, err := s.CloseAndRecv()
			if err != nil {
				t.Fatal(err)
			}
			if out.Value != "server(client:a,b,c)" {
				t.Fatalf("got %q", out.Value)
			}
		})
		t.Run("bidi", func(t *testing.T) {
			s, err := c.Bidi(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				v := fmt.Sprint("m", i)
				if err := s.Send(wrapperspb.String(v)); err != nil {
					t.Fatal(err)
				}
				out, err := s.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if want := "server(client:" + v + ")"; out.Value != want {
					t.Fatalf("got %q, want %q", out.Value, want)
				}
			}
			if err := s.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("after CloseSend: got %v, want io.EOF", err)
			}
		})
	})
}

// TestServerCallsClients has the server call its clients outside any
// handler: from the OnPeer hook as each connects, and through
// Server.Peers, which lists exactly the connected clients.
func TestServerCallsClients(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		type pushed struct {
			value string
			err   error
		}
		pushes := make(chan pushed, 4)
		srv := NewServer(muxOpt(tr), OnPeer(func(p *Peer) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := echoClient{p}.Unary(ctx, wrapperspb.String("welcome"))
			if err != nil {
				pushes <- pushed{err: err}
				return
			}
			pushes <- pushed{value: out.Value}
		}))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)

		dialNamed := func(name string) *Peer {
			callbacks := NewServer()
			callbacks.RegisterService(&echoDesc, &echoImpl{name: name})
			return dial(t, addr, WithServices(callbacks), muxOpt(tr))
		}
		one := dialNamed("one")
		if p := await(t, pushes, 10*time.Second, "OnPeer's call"); p.err != nil || p.value != "one:welcome" {
			t.Fatalf("OnPeer's call: got %q, %v", p.value, p.err)
		}
		two := dialNamed("two")
		if p := await(t, pushes, 10*time.Second, "OnPeer's call"); p.err != nil || p.value != "two:welcome" {
			t.Fatalf("OnPeer's call: got %q, %v", p.value, p.err)
		}

		// Peers lists both; each reaches its own client, by address.
		peers := srv.Peers()
		if len(peers) != 2 {
			t.Fatalf("Peers: got %d, want 2", len(peers))
		}
		names := map[string]string{
			one.Session().LocalAddr().String(): "one",
			two.Session().LocalAddr().String(): "two",
		}
		for _, p := range peers {
			name, ok := names[p.RemoteAddr().String()]
			if !ok {
				t.Fatalf("peer %v is none of the clients %v", p.RemoteAddr(), names)
			}
			delete(names, p.RemoteAddr().String())
			checkEcho(t, ctx, p, name)
			// A streaming call from the server to the client, outside handlers.
			s, err := echoClient{p}.ServerStream(ctx, wrapperspb.String("push"))
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				m, err := s.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if m.Value != name+":push" {
					t.Fatalf("got %q", m.Value)
				}
			}
			if _, err := s.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("got %v, want io.EOF", err)
			}
		}

		// A client that leaves is no longer listed.
		two.Close()
		eventually(t, 5*time.Second, "Peers to drop the closed client", func() bool { return len(srv.Peers()) == 1 })
		if got := srv.Peers()[0].RemoteAddr().String(); got != one.Session().LocalAddr().String() {
			t.Fatalf("the remaining peer is %v, want client one at %v", got, one.Session().LocalAddr())
		}
	})
}
