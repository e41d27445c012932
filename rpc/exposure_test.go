package rpc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// What a peer can reach of the other side: only the methods the other
// side registered. Everything else is UNIMPLEMENTED, with a message that
// names what was asked for and nothing else.

// callbackDesc is test.Echo under another name: a service only the
// client registers, for the server to call back.
var callbackDesc = func() ServiceDesc {
	d := echoDesc
	d.ServiceName = "test.Callback"
	return d
}()

// registeredNames lists every name a side's registry holds: services,
// methods and full method names.
func registeredNames(descs ...*ServiceDesc) []string {
	var names []string
	for _, d := range descs {
		names = append(names, d.ServiceName)
		for _, m := range d.Methods {
			names = append(names, m.MethodName, "/"+d.ServiceName+"/"+m.MethodName)
		}
		for _, s := range d.Streams {
			names = append(names, s.StreamName, "/"+d.ServiceName+"/"+s.StreamName)
		}
	}
	return names
}

// unimplementedCall is a call of a method the callee does not serve, and
// the message its status must carry, exactly.
type unimplementedCall struct {
	method, want string
}

// checkUnimplemented makes the call as unary, server-streaming and
// bidi-streaming: each fails with UNIMPLEMENTED and exactly c.want, with
// no details, no header and no trailer metadata, and the message holds
// none of names that the method asked for does not contain.
func checkUnimplemented(t *testing.T, ctx context.Context, cc *Peer, c unimplementedCall, names []string) {
	t.Helper()
	check := func(kind string, err error, header, trailer metadata.MD) {
		t.Helper()
		s, ok := status.FromError(err)
		if !ok || s.Code() != codes.Unimplemented || s.Message() != c.want {
			t.Fatalf("%s %q: got %v, want Unimplemented %q", kind, c.method, err, c.want)
		}
		if len(s.Details()) != 0 || len(header) != 0 || len(trailer) != 0 {
			t.Fatalf("%s %q: the answer carries details %v, header %v, trailer %v", kind, c.method, s.Details(), header, trailer)
		}
		for _, n := range names {
			if !strings.Contains(c.method, n) && strings.Contains(s.Message(), n) {
				t.Fatalf("%s %q: the message %q reveals %q", kind, c.method, s.Message(), n)
			}
		}
	}
	var header, trailer metadata.MD
	err := cc.Invoke(ctx, c.method, wrapperspb.String("x"), new(wrapperspb.StringValue), Header(&header), Trailer(&trailer))
	check("unary", err, header, trailer)

	for _, desc := range []*StreamDesc{{ServerStreams: true}, {ServerStreams: true, ClientStreams: true}} {
		kind := "server-streaming"
		if desc.ClientStreams {
			kind = "bidi"
		}
		s, err := cc.NewStream(ctx, desc, c.method)
		if err != nil {
			t.Fatal(err)
		}
		s.SendMsg(wrapperspb.String("x")) // may fail: the callee answers without reading
		if !desc.ClientStreams {
			s.CloseSend()
		}
		err = s.RecvMsg(new(wrapperspb.StringValue))
		h, _ := s.Header()
		check(kind, err, h, s.Trailer())
	}
}

// TestPeerReachesOnlyWhatTheOtherSideRegistered calls, in both directions
// of a session where the server registered test.Echo and the client
// test.Callback, every kind of method the callee does not serve: a
// service only the caller's own side registered, an unknown method of a
// registered service, an unknown service, a name of the wrong case, a
// method path with an extra segment, and malformed names; by unary,
// server-streaming and bidi calls. Each fails with UNIMPLEMENTED and a
// message that is exactly what it names, listing no service or method of
// either side beyond the requested one, with no details or metadata; the
// registered methods still answer afterwards and the session ends up
// with no stream open.
func TestPeerReachesOnlyWhatTheOtherSideRegistered(t *testing.T) {
	names := registeredNames(&echoDesc, &callbackDesc)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		callbacks := NewServer()
		callbacks.RegisterService(&callbackDesc, &echoImpl{name: "client"})
		client := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		server := onlyPeer(t, srv)

		for _, dir := range []struct {
			name       string
			cc         *Peer
			own, other string // the caller's service, the callee's
			callee     string // who answers the callee's service
		}{
			{"clientToServer", client, "test.Callback", "test.Echo", "server"},
			{"serverToClient", server, "test.Echo", "test.Callback", "client"},
		} {
			t.Run(dir.name, func(t *testing.T) {
				for _, c := range []unimplementedCall{
					{"/" + dir.own + "/Unary", "unknown service " + dir.own},
					{"/" + dir.own + "/Bidi", "unknown service " + dir.own},
					{"/" + dir.other + "/Nope", "unknown method /" + dir.other + "/Nope"},
					{"/" + dir.other + "/unary", "unknown method /" + dir.other + "/unary"},
					{"/" + dir.other + "/Unary/x", "unknown method /" + dir.other + "/Unary/x"},
					{"/" + dir.other + "/", "unknown method /" + dir.other + "/"},
					{"/" + strings.ToUpper(dir.other) + "/Unary", "unknown service " + strings.ToUpper(dir.other)},
					{"/nope.Svc/Unary", "unknown service nope.Svc"},
					{"/" + dir.other, `malformed method name "/` + dir.other + `"`},
					{"bogus", `malformed method name "bogus"`},
				} {
					checkUnimplemented(t, ctx, dir.cc, c, names)
				}
				// The callee's own methods still answer, on the same session.
				out := new(wrapperspb.StringValue)
				err := dir.cc.Invoke(ctx, "/"+dir.other+"/Unary", wrapperspb.String("ping"), out)
				if err != nil || out.Value != dir.callee+":ping" {
					t.Fatalf("a registered method after the refusals: got %v, %v", out, err)
				}
			})
		}
		if err := client.Err(); err != nil {
			t.Fatalf("the session ended: %v", err)
		}
		eventually(t, 5*time.Second, "no stream left open", func() bool {
			return client.Session().NumStreams() == 0 && server.Session().NumStreams() == 0
		})
	})
}

// TestPeerWithoutServicesAnswersUnimplemented has the server call a client
// that dialed without WithServices, through the Peer OnPeer gives it and
// from inside a handler through PeerFromContext, by unary and streaming
// calls, for the server's own service and any other name: each fails with
// UNIMPLEMENTED "this peer serves no services". The session stays healthy:
// the client's calls to the server go on succeeding between the refusals,
// the server's calls go on being refused the same way, and no stream is
// left open.
func TestPeerWithoutServicesAnswersUnimplemented(t *testing.T) {
	const want = "this peer serves no services"
	names := registeredNames(&echoDesc)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		peers := make(chan *Peer, 1)
		srv := NewServer(muxOpt(tr), OnPeer(func(p *Peer) { peers <- p }))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.Value != "call me back" {
				return defaultEcho.Unary(ctx, in)
			}
			// The callback's status goes back to the caller as it came.
			_, err := echoClient{PeerFromContext(ctx)}.Unary(ctx, in)
			return nil, err
		}})
		client := dial(t, serve(t, srv), muxOpt(tr))
		server := await(t, peers, 5*time.Second, "OnPeer")

		for round := range 3 {
			for _, m := range []string{"/test.Echo/Unary", "/test.Echo/Bidi", "/test.Callback/Unary", "/nope.Svc/Unary", "bogus"} {
				checkUnimplemented(t, ctx, server, unimplementedCall{m, want}, names)
			}
			checkEcho(t, ctx, client, "server")
			_, err := echoClient{client}.Unary(ctx, wrapperspb.String("call me back"))
			wantStatus(t, err, codes.Unimplemented, want)
			if err := client.Err(); err != nil {
				t.Fatalf("round %d: the session ended: %v", round, err)
			}
		}
		eventually(t, 5*time.Second, "no stream left open", func() bool {
			return client.Session().NumStreams() == 0 && server.Session().NumStreams() == 0
		})
	})
}
