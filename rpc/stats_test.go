package rpc

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// recorder is a stats.Handler that records every call and session it is
// told of, each call under the tag its TagRPC put in the context.
type recorder struct {
	mu    sync.Mutex
	calls []*recCall
	conns []*recConn
}

type recCallKey struct{}
type recConnKey struct{}

// recCall is what a recorder was told of one call.
type recCall struct {
	info     stats.RPCTagInfo
	incoming metadata.MD // what TagRPC's context carried in
	parent   *recCall    // the call whose tagged context TagRPC's derives from
	conn     *recConn    // the session whose tagged context TagRPC's derives from
	events   []stats.RPCStats
	ended    chan struct{} // closed at End
}

type recConn struct {
	info   stats.ConnTagInfo
	events []stats.ConnStats
}

func (r *recorder) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	c := &recCall{info: *info, ended: make(chan struct{})}
	c.incoming, _ = metadata.FromIncomingContext(ctx)
	c.parent, _ = ctx.Value(recCallKey{}).(*recCall)
	c.conn, _ = ctx.Value(recConnKey{}).(*recConn)
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return context.WithValue(ctx, recCallKey{}, c)
}

func (r *recorder) HandleRPC(ctx context.Context, s stats.RPCStats) {
	c, _ := ctx.Value(recCallKey{}).(*recCall)
	if c == nil {
		panic(fmt.Sprintf("HandleRPC(%T) with a context TagRPC did not tag", s))
	}
	r.mu.Lock()
	c.events = append(c.events, s)
	r.mu.Unlock()
	if _, ok := s.(*stats.End); ok {
		close(c.ended) // a second End panics
	}
}

func (r *recorder) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	c := &recConn{info: *info}
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.mu.Unlock()
	return context.WithValue(ctx, recConnKey{}, c)
}

func (r *recorder) HandleConn(ctx context.Context, s stats.ConnStats) {
	c := ctx.Value(recConnKey{}).(*recConn)
	r.mu.Lock()
	c.events = append(c.events, s)
	r.mu.Unlock()
}

// reset forgets the calls recorded.
func (r *recorder) reset() {
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
}

// call waits for the one call of method on the side client says, and for
// its End, and returns it.
func (r *recorder) call(t testing.TB, method string, client bool) *recCall {
	t.Helper()
	var c *recCall
	eventually(t, 5*time.Second, "the stats of "+method, func() bool {
		cs := r.callsOf(method, client)
		if len(cs) > 1 {
			t.Fatalf("%d calls of %s (client %v) reported, want 1", len(cs), method, client)
		}
		if len(cs) == 1 {
			c = cs[0]
		}
		return c != nil
	})
	await(t, c.ended, 5*time.Second, "the End of "+method)
	return c
}

// callsOf returns the calls of method on the side client says.
func (r *recorder) callsOf(method string, client bool) []*recCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cs []*recCall
	for _, c := range r.calls {
		// A call's side shows in its first event; one without events yet
		// is of either.
		if c.info.FullMethodName == method && len(c.events) > 0 && c.events[0].IsClient() == client {
			cs = append(cs, c)
		}
	}
	return cs
}

// names returns the events of c by name, "OutPayload*3" for three in a
// row.
func (r *recorder) names(c *recCall) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	n := 0
	for i, e := range c.events {
		name := fmt.Sprintf("%T", e)[len("*stats."):]
		n++
		if i+1 < len(c.events) && fmt.Sprintf("%T", c.events[i+1]) == fmt.Sprintf("%T", e) {
			continue
		}
		if n > 1 {
			name = fmt.Sprintf("%s*%d", name, n)
		}
		names = append(names, name)
		n = 0
	}
	return strings.Join(names, " ")
}

func eventsOf[T stats.RPCStats](r *recorder, c *recCall) []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []T
	for _, e := range c.events {
		if e, ok := e.(T); ok {
			out = append(out, e)
		}
	}
	return out
}

// statsEcho is test.Echo with metadata both ways: it checks the request
// header "k", sets the response header "h" and the trailer "t", and tells
// calls apart by their request: "fail" fails with FailedPrecondition,
// "callback" calls the caller's test.Echo back first.
func statsEcho(t testing.TB, rec *recorder) *funcEcho {
	check := func(ctx context.Context) {
		if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("k")) == 0 {
			t.Errorf("the handler's context lacks the request metadata: %v", md)
		}
		if c, _ := ctx.Value(recCallKey{}).(*recCall); c == nil {
			t.Errorf("the handler does not run in the context TagRPC returned")
		}
		if c, _ := ctx.Value(recConnKey{}).(*recConn); c == nil {
			t.Errorf("the handler's context does not derive from the one TagConn returned")
		}
		SetHeader(ctx, metadata.Pairs("h", "hv"))
		SetTrailer(ctx, metadata.Pairs("t", "tv"))
	}
	return &funcEcho{
		unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			check(ctx)
			switch in.Value {
			case "fail":
				return nil, status.Error(codes.FailedPrecondition, "asked to fail")
			case "callback":
				if _, err := (echoClient{PeerFromContext(ctx)}).Unary(ctx, wrapperspb.String("back")); err != nil {
					return nil, err
				}
			}
			return wrapperspb.String("s:" + in.Value), nil
		},
		serverStream: func(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
			check(s.Context())
			for range 3 {
				if err := s.Send(wrapperspb.String("s:" + in.Value)); err != nil {
					return err
				}
			}
			return nil
		},
		clientStream: func(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			check(s.Context())
			var all []string
			for {
				in, err := s.Recv()
				if err == io.EOF {
					return s.SendAndClose(wrapperspb.String("s:" + strings.Join(all, ",")))
				}
				if err != nil {
					return err
				}
				all = append(all, in.Value)
			}
		},
		bidi: func(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
			check(s.Context())
			for {
				in, err := s.Recv()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if err := s.Send(wrapperspb.String("s:" + in.Value)); err != nil {
					return err
				}
			}
		},
	}
}

// statsPair is a server and a client, each with a recorder, the client
// serving test.Echo for callbacks.
type statsPair struct {
	srvRec, cliRec *recorder
	srv            *Server
	client         *Peer
	server         *Peer // the server's side of the session
}

func newStatsPair(t *testing.T, tr mux.Transport) *statsPair {
	sp := &statsPair{srvRec: new(recorder), cliRec: new(recorder)}
	sp.srv = NewServer(muxOpt(tr), WithStatsHandler(sp.srvRec))
	sp.srv.RegisterService(&echoDesc, statsEcho(t, sp.srvRec))
	callbacks := NewServer()
	callbacks.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if c, _ := ctx.Value(recCallKey{}).(*recCall); c == nil {
			t.Errorf("the callback's handler does not run in the context TagRPC returned")
		}
		return wrapperspb.String("c:" + in.Value), nil
	}})
	sp.client = dial(t, serve(t, sp.srv), muxOpt(tr), WithServices(callbacks), WithStatsHandler(sp.cliRec))
	sp.server = onlyPeer(t, sp.srv)
	return sp
}

func outCtx(t testing.TB) context.Context {
	return metadata.AppendToOutgoingContext(testCtx(t, 20*time.Second), "k", "kv")
}

// The events of each side of a call, in order, as gRPC-Go reports them.
const (
	clientUnary   = "RPCTagInfo Begin OutHeader OutPayload InHeader InPayload InTrailer End"
	serverUnary   = "RPCTagInfo InHeader Begin InPayload OutHeader OutPayload OutTrailer End"
	clientFailed  = "RPCTagInfo Begin OutHeader OutPayload InHeader InTrailer End"
	serverFailed  = "RPCTagInfo InHeader Begin InPayload OutHeader OutTrailer End"
	clientSStream = "RPCTagInfo Begin OutHeader OutPayload InHeader InPayload*3 InTrailer End"
	serverSStream = "RPCTagInfo InHeader Begin InPayload OutHeader OutPayload*3 OutTrailer End"
	clientCStream = "RPCTagInfo Begin OutHeader OutPayload*2 InHeader InPayload InTrailer End"
	serverCStream = "RPCTagInfo InHeader Begin InPayload*2 OutHeader OutPayload OutTrailer End"
	clientBidi    = "RPCTagInfo Begin OutHeader OutPayload InHeader InPayload OutPayload InPayload InTrailer End"
	serverBidi    = "RPCTagInfo InHeader Begin InPayload OutHeader OutPayload InPayload OutPayload OutTrailer End"
)

// names is r.names(c) with the TagRPC, which the recorder holds apart,
// first.
func (r *recorder) sequence(c *recCall) string { return "RPCTagInfo " + r.names(c) }

// TestStatsHandlerEvents makes a call of each kind, and one that fails,
// and checks the events both sides report, in order and field by field.
func TestStatsHandlerEvents(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		sp := newStatsPair(t, tr)
		ctx := outCtx(t)
		ec := echoClient{sp.client}

		req := wrapperspb.String("ping")
		var header, trailer metadata.MD
		out, err := ec.Unary(ctx, req, Header(&header), Trailer(&trailer))
		if err != nil || out.Value != "s:ping" {
			t.Fatalf("unary: %v, %v", out, err)
		}
		cc, sc := sp.cliRec.call(t, "/test.Echo/Unary", true), sp.srvRec.call(t, "/test.Echo/Unary", false)
		if got := sp.cliRec.sequence(cc); got != clientUnary {
			t.Errorf("client's unary events:\n got %s\nwant %s", got, clientUnary)
		}
		if got := sp.srvRec.sequence(sc); got != serverUnary {
			t.Errorf("server's unary events:\n got %s\nwant %s", got, serverUnary)
		}
		checkClientFields(t, sp, cc, req, out, nil, false, false)
		checkServerFields(t, sp, sc, req, out, nil, false, false)

		sp.cliRec.reset() // the next call is of the same method
		sp.srvRec.reset()
		_, err = ec.Unary(ctx, wrapperspb.String("fail"))
		wantStatus(t, err, codes.FailedPrecondition, "asked to fail")
		cc, sc = sp.cliRec.call(t, "/test.Echo/Unary", true), sp.srvRec.call(t, "/test.Echo/Unary", false)
		if got := sp.cliRec.sequence(cc); got != clientFailed {
			t.Errorf("client's failed call's events:\n got %s\nwant %s", got, clientFailed)
		}
		if got := sp.srvRec.sequence(sc); got != serverFailed {
			t.Errorf("server's failed call's events:\n got %s\nwant %s", got, serverFailed)
		}
		for side, rc := range map[string]*recorder{"client": sp.cliRec, "server": sp.srvRec} {
			c := map[string]*recCall{"client": cc, "server": sc}[side]
			end := eventsOf[*stats.End](rc, c)[0]
			if s, _ := status.FromError(end.Error); s.Code() != codes.FailedPrecondition || s.Message() != "asked to fail" {
				t.Errorf("%s's End.Error = %v, want the call's status", side, end.Error)
			}
		}

		ss, err := ec.ServerStream(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var last *wrapperspb.StringValue
		for {
			m, err := ss.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			last = m
		}
		cc, sc = sp.cliRec.call(t, "/test.Echo/ServerStream", true), sp.srvRec.call(t, "/test.Echo/ServerStream", false)
		if got := sp.cliRec.sequence(cc); got != clientSStream {
			t.Errorf("client's server-streaming events:\n got %s\nwant %s", got, clientSStream)
		}
		if got := sp.srvRec.sequence(sc); got != serverSStream {
			t.Errorf("server's server-streaming events:\n got %s\nwant %s", got, serverSStream)
		}
		checkClientFields(t, sp, cc, req, last, &echoDesc.Streams[0], false, true)
		checkServerFields(t, sp, sc, req, last, &echoDesc.Streams[0], false, true)

		cs, err := ec.ClientStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"a", "b"} {
			if err := cs.Send(wrapperspb.String(v)); err != nil {
				t.Fatal(err)
			}
		}
		out, err = cs.CloseAndRecv()
		if err != nil || out.Value != "s:a,b" {
			t.Fatalf("client stream: %v, %v", out, err)
		}
		cc, sc = sp.cliRec.call(t, "/test.Echo/ClientStream", true), sp.srvRec.call(t, "/test.Echo/ClientStream", false)
		if got := sp.cliRec.sequence(cc); got != clientCStream {
			t.Errorf("client's client-streaming events:\n got %s\nwant %s", got, clientCStream)
		}
		if got := sp.srvRec.sequence(sc); got != serverCStream {
			t.Errorf("server's client-streaming events:\n got %s\nwant %s", got, serverCStream)
		}
		checkClientFields(t, sp, cc, wrapperspb.String("b"), out, &echoDesc.Streams[1], true, false)
		checkServerFields(t, sp, sc, wrapperspb.String("b"), out, &echoDesc.Streams[1], true, false)

		bs, err := ec.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"a", "b"} {
			if err := bs.Send(wrapperspb.String(v)); err != nil {
				t.Fatal(err)
			}
			if last, err = bs.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		bs.CloseSend()
		if _, err := bs.Recv(); err != io.EOF {
			t.Fatalf("bidi ended with %v", err)
		}
		cc, sc = sp.cliRec.call(t, "/test.Echo/Bidi", true), sp.srvRec.call(t, "/test.Echo/Bidi", false)
		if got := sp.cliRec.sequence(cc); got != clientBidi {
			t.Errorf("client's bidi events:\n got %s\nwant %s", got, clientBidi)
		}
		if got := sp.srvRec.sequence(sc); got != serverBidi {
			t.Errorf("server's bidi events:\n got %s\nwant %s", got, serverBidi)
		}
		checkClientFields(t, sp, cc, wrapperspb.String("b"), last, &echoDesc.Streams[2], true, true)
		checkServerFields(t, sp, sc, wrapperspb.String("b"), last, &echoDesc.Streams[2], true, true)
	})
}

// checkClientFields checks the fields of the client's events of call c,
// whose last request was req and last response resp.
func checkClientFields(t *testing.T, sp *statsPair, c *recCall, req, resp proto.Message, desc *StreamDesc, cstream, sstream bool) {
	t.Helper()
	r := sp.cliRec
	if !c.info.FailFast {
		t.Errorf("RPCTagInfo.FailFast false for a call without WaitForReady")
	}
	b := eventsOf[*stats.Begin](r, c)[0]
	if !b.Client || !b.FailFast || b.IsClientStream != cstream || b.IsServerStream != sstream || b.BeginTime.IsZero() {
		t.Errorf("client Begin %+v", b)
	}
	oh := eventsOf[*stats.OutHeader](r, c)[0]
	if !oh.Client || oh.FullMethod != c.info.FullMethodName || !sameAddr(oh.RemoteAddr, sp.client.RemoteAddr()) ||
		!sameAddr(oh.LocalAddr, sp.client.Session().LocalAddr()) || oh.Header.Get("k")[0] != "kv" || oh.Compression != "" {
		t.Errorf("client OutHeader %+v", oh)
	}
	ops := eventsOf[*stats.OutPayload](r, c)
	op := ops[len(ops)-1]
	if n := proto.Size(req); !op.Client || !proto.Equal(op.Payload.(proto.Message), req) || op.Length != n || op.CompressedLength != n || op.WireLength != n+5 || op.SentTime.IsZero() {
		t.Errorf("client OutPayload %+v; want Length %d", op, proto.Size(req))
	}
	ih := eventsOf[*stats.InHeader](r, c)[0]
	if !ih.Client || ih.Header.Get("h")[0] != "hv" || ih.WireLength <= 5 {
		t.Errorf("client InHeader %+v", ih)
	}
	ips := eventsOf[*stats.InPayload](r, c)
	ip := ips[len(ips)-1]
	if n := proto.Size(resp); !ip.Client || !proto.Equal(ip.Payload.(proto.Message), resp) || ip.Length != n || ip.CompressedLength != n || ip.WireLength != n+5 || ip.RecvTime.IsZero() {
		t.Errorf("client InPayload %+v; want Length %d", ip, proto.Size(resp))
	}
	it := eventsOf[*stats.InTrailer](r, c)[0]
	if !it.Client || it.Trailer.Get("t")[0] != "tv" || it.WireLength <= 5 {
		t.Errorf("client InTrailer %+v", it)
	}
	e := eventsOf[*stats.End](r, c)[0]
	if !e.Client || e.Error != nil || !e.BeginTime.Equal(b.BeginTime) || e.EndTime.Before(e.BeginTime) || e.Trailer.Get("t")[0] != "tv" {
		t.Errorf("client End %+v", e)
	}
	if !ip.RecvTime.After(op.SentTime) && !ip.RecvTime.Equal(op.SentTime) {
		t.Errorf("client received at %v before it sent at %v", ip.RecvTime, op.SentTime)
	}
}

// checkServerFields checks the server's events of call c as
// checkClientFields does the client's.
func checkServerFields(t *testing.T, sp *statsPair, c *recCall, req, resp proto.Message, desc *StreamDesc, cstream, sstream bool) {
	t.Helper()
	r := sp.srvRec
	if c.info.FailFast || c.incoming.Get("k")[0] != "kv" {
		t.Errorf("server RPCTagInfo %+v; TagRPC's context's incoming metadata %v", c.info, c.incoming)
	}
	if c.conn == nil {
		t.Errorf("server's TagRPC context does not derive from TagConn's")
	}
	ih := eventsOf[*stats.InHeader](r, c)[0]
	if ih.Client || ih.FullMethod != c.info.FullMethodName || !sameAddr(ih.RemoteAddr, sp.client.Session().LocalAddr()) ||
		!sameAddr(ih.LocalAddr, sp.client.RemoteAddr()) || ih.Header.Get("k")[0] != "kv" || ih.WireLength <= 5 || ih.Compression != "" {
		t.Errorf("server InHeader %+v", ih)
	}
	b := eventsOf[*stats.Begin](r, c)[0]
	if b.Client || b.FailFast || b.IsClientStream != cstream || b.IsServerStream != sstream || b.BeginTime.IsZero() {
		t.Errorf("server Begin %+v", b)
	}
	ips := eventsOf[*stats.InPayload](r, c)
	ip := ips[len(ips)-1]
	if n := proto.Size(req); ip.Client || !proto.Equal(ip.Payload.(proto.Message), req) || ip.Length != n || ip.CompressedLength != n || ip.WireLength != n+5 || ip.RecvTime.IsZero() {
		t.Errorf("server InPayload %+v; want Length %d", ip, proto.Size(req))
	}
	oh := eventsOf[*stats.OutHeader](r, c)[0]
	if oh.Client || oh.Header.Get("h")[0] != "hv" {
		t.Errorf("server OutHeader %+v", oh)
	}
	ops := eventsOf[*stats.OutPayload](r, c)
	op := ops[len(ops)-1]
	if n := proto.Size(resp); op.Client || !proto.Equal(op.Payload.(proto.Message), resp) || op.Length != n || op.CompressedLength != n || op.WireLength != n+5 || op.SentTime.IsZero() {
		t.Errorf("server OutPayload %+v; want Length %d", op, proto.Size(resp))
	}
	ot := eventsOf[*stats.OutTrailer](r, c)[0]
	if ot.Client || ot.Trailer.Get("t")[0] != "tv" {
		t.Errorf("server OutTrailer %+v", ot)
	}
	e := eventsOf[*stats.End](r, c)[0]
	if e.Client || e.Error != nil || !e.BeginTime.Equal(b.BeginTime) || e.EndTime.Before(e.BeginTime) {
		t.Errorf("server End %+v", e)
	}
}

func sameAddr(a, b net.Addr) bool {
	return a != nil && b != nil && a.Network() == b.Network() && a.String() == b.String()
}

// TestStatsHandlerCallbacks has the server's handler call the client
// back with its context: the server reports the callback as a client
// call whose TagRPC context derives from the handler's call, the client
// as a call it serves; both sides report the sessions, each as its side.
func TestStatsHandlerCallbacks(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		sp := newStatsPair(t, tr)
		ctx := outCtx(t)
		if _, err := (echoClient{sp.client}).Unary(ctx, wrapperspb.String("callback")); err != nil {
			t.Fatal(err)
		}
		outer := sp.srvRec.call(t, "/test.Echo/Unary", false)
		back := sp.srvRec.call(t, "/test.Echo/Unary", true)
		if got := sp.srvRec.sequence(back); got != clientUnary {
			t.Errorf("server's callback events:\n got %s\nwant %s", got, clientUnary)
		}
		if back.parent != outer {
			t.Errorf("the callback's TagRPC context does not derive from its handler's call")
		}
		served := sp.cliRec.call(t, "/test.Echo/Unary", false)
		if got := sp.cliRec.sequence(served); got != "RPCTagInfo InHeader Begin InPayload OutHeader OutPayload OutTrailer End" {
			t.Errorf("client's served callback events:\n got %s", got)
		}
		if served.conn == nil {
			t.Errorf("the dialing side's served call does not derive from its TagConn context")
		}
		if ih := eventsOf[*stats.InHeader](sp.cliRec, served)[0]; !sameAddr(ih.RemoteAddr, sp.client.RemoteAddr()) {
			t.Errorf("client's served InHeader %+v", ih)
		}
		// The callee sent no header metadata: the caller's InHeader is
		// the response's beginning, empty.
		if ih := eventsOf[*stats.InHeader](sp.srvRec, back)[0]; !ih.Client || ih.Header == nil || ih.Header.Len() != 0 || ih.WireLength != 0 {
			t.Errorf("server's callback InHeader %+v", ih)
		}
		if oh := eventsOf[*stats.OutHeader](sp.cliRec, served)[0]; oh.Header == nil || oh.Header.Len() != 0 {
			t.Errorf("client's served OutHeader %+v", oh)
		}

		sp.client.Close()
		for side, rc := range map[string]*recorder{"client": sp.cliRec, "server": sp.srvRec} {
			eventually(t, 5*time.Second, side+"'s ConnEnd", func() bool {
				rc.mu.Lock()
				defer rc.mu.Unlock()
				return len(rc.conns) == 1 && len(rc.conns[0].events) == 2
			})
			rc.mu.Lock()
			conn := rc.conns[0]
			rc.mu.Unlock()
			isClient := side == "client"
			b, ok1 := conn.events[0].(*stats.ConnBegin)
			e, ok2 := conn.events[1].(*stats.ConnEnd)
			if !ok1 || !ok2 || b.Client != isClient || e.Client != isClient {
				t.Errorf("%s's session events %#v, %#v", side, conn.events[0], conn.events[1])
			}
			local, remote := sp.client.Session().LocalAddr(), sp.client.RemoteAddr()
			if !isClient {
				local, remote = remote, local
			}
			if !sameAddr(conn.info.LocalAddr, local) || !sameAddr(conn.info.RemoteAddr, remote) {
				t.Errorf("%s's ConnTagInfo %+v", side, conn.info)
			}
		}
	})
}

// TestStatsHandlerUnknownMethod calls a method the server lacks: the
// server reports TagRPC, InHeader and OutTrailer, as gRPC-Go does, and no
// Begin or End; the caller's End carries Unimplemented.
func TestStatsHandlerUnknownMethod(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		sp := newStatsPair(t, tr)
		ctx := outCtx(t)
		err := sp.client.Invoke(ctx, "/test.Echo/Nope", wrapperspb.String("x"), new(wrapperspb.StringValue))
		wantStatus(t, err, codes.Unimplemented, "unknown method")
		cc := sp.cliRec.call(t, "/test.Echo/Nope", true)
		if e := eventsOf[*stats.End](sp.cliRec, cc)[0]; status.Code(e.Error) != codes.Unimplemented {
			t.Errorf("client End.Error %v", e.Error)
		}
		var sc *recCall
		eventually(t, 5*time.Second, "the server's OutTrailer", func() bool {
			cs := sp.srvRec.callsOf("/test.Echo/Nope", false)
			if len(cs) == 1 && len(eventsOf[*stats.OutTrailer](sp.srvRec, cs[0])) == 1 {
				sc = cs[0]
			}
			return sc != nil
		})
		if got, want := sp.srvRec.sequence(sc), "RPCTagInfo InHeader OutTrailer"; got != want {
			t.Errorf("server's events of an unknown method: %s, want %s", got, want)
		}
	})
}

// TestStatsHandlerMovedCallReportsOnce has a Client call a server that
// sends GoAways on its sessions, one after the other, while calls are on
// their way: a call that a going-away session refused moves to the next
// session, reporting its attempts (an OutHeader each) but one TagRPC, one
// Begin and one End. The native transport only: smux has no GoAway.
func TestStatsHandlerMovedCallReportsOnce(t *testing.T) {
	b := startBackend(t, "b", "127.0.0.1:0")
	rec := new(recorder)
	c := newClient(t, "passthrough:///"+b.addr, fastConnect, WithStatsHandler(rec))
	ctx := testCtx(t, 20*time.Second)
	checkEchoName(t, ctx, c, "b")
	moved := func() bool {
		for _, cl := range rec.callsOf("/test.Echo/Unary", true) {
			if len(eventsOf[*stats.OutHeader](rec, cl)) > 1 {
				return true
			}
		}
		return false
	}
	calls := 1
	deadline := time.Now().Add(10 * time.Second)
	for !moved() {
		if time.Now().After(deadline) {
			t.Fatal("no call moved to another session within 10s")
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := echoClient{c}.Unary(ctx, wrapperspb.String("x"))
					mu.Lock()
					calls++
					mu.Unlock()
					if err != nil {
						t.Errorf("a call failed: %v", err)
						return
					}
				}
			}()
		}
		time.Sleep(5 * time.Millisecond)
		if ps := b.srv.Peers(); len(ps) > 0 {
			ps[0].Session().GoAway(mux.GoAwayNormal, nil)
		}
		time.Sleep(20 * time.Millisecond)
		close(stop)
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	all := rec.callsOf("/test.Echo/Unary", true)
	t.Logf("%d calls, one of them moved", calls)
	if len(all) != calls {
		t.Errorf("%d calls reported, %d made", len(all), calls)
	}
	for _, cl := range all {
		await(t, cl.ended, 5*time.Second, "a call's End")
		names := rec.names(cl)
		if strings.Count(names, "Begin") != 1 || strings.Count(names, "End") != 1 || !strings.HasPrefix(names, "Begin ") || !strings.HasSuffix(names, " End") {
			t.Errorf("a call reported %s", names)
		}
		if e := eventsOf[*stats.End](rec, cl)[0]; e.Error != nil {
			t.Errorf("a call's End.Error %v", e.Error)
		}
	}
}

// TestStatsHandlerDirectoryMovedCall sends calls through a route whose
// first session has ended: each moves to the live one and reports once.
func TestStatsHandlerDirectoryMovedCall(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	rec := new(recorder)
	srv, addr := agentServer(t, mux.Native, WithStatsHandler(rec))
	dir := srv.Directory()
	dialAgent(t, srv, addr, mux.Native, "gone", "gone")
	dialAgent(t, srv, addr, mux.Native, "live", "live")
	gone, live := dir.Lookup("gone")[0], dir.Lookup("live")[0]
	gone.Session().Kill()
	r := &stubRoute{d: dir, picks: []*Peer{gone, live}}
	if out, err := (echoClient{conn(r)}).Unary(ctx, wrapperspb.String("ping")); err != nil || out.Value != "live:ping" || r.asked.Load() != 2 {
		t.Fatalf("%v, %v after %d choices", out, err, r.asked.Load())
	}
	c := rec.call(t, "/test.Echo/Unary", true)
	if got := rec.sequence(c); got != clientUnary {
		t.Errorf("a moved call's events: %s, want %s", got, clientUnary)
	}
	r = &stubRoute{d: dir, picks: []*Peer{gone, live}}
	s, err := echoClient{conn(r)}.ServerStream(ctx, wrapperspb.String("ping"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = s.Recv()
	}
	if err != io.EOF {
		t.Fatal(err)
	}
	c = rec.call(t, "/test.Echo/ServerStream", true)
	if got := rec.sequence(c); !strings.HasPrefix(got, "RPCTagInfo Begin OutHeader OutPayload") || strings.Count(got, "End") != 1 {
		t.Errorf("a moved stream's events: %s", got)
	}
}

// TestStatsHandlersInOrder gives two handlers: each sees every event, the
// first's TagRPC first, the second's tagging the first's context.
func TestStatsHandlersInOrder(t *testing.T) {
	first, second := new(recorder), new(orderRecorder)
	second.first = first
	srv := NewServer(WithStatsHandler(first), WithStatsHandler(nil), WithStatsHandler(second))
	srv.RegisterService(&echoDesc, &echoImpl{name: "s"})
	p := dial(t, serve(t, srv))
	checkEcho(t, testCtx(t, 10*time.Second), p, "s")
	c := first.call(t, "/test.Echo/Unary", false)
	eventually(t, 5*time.Second, "the second handler's End", func() bool {
		second.mu.Lock()
		defer second.mu.Unlock()
		return slices.Contains(second.seen, "End")
	})
	second.mu.Lock()
	defer second.mu.Unlock()
	if got, want := strings.Join(second.seen, " "), first.names(c); got != want || second.untagged {
		t.Errorf("second handler saw %s (untagged %v), want %s", got, second.untagged, want)
	}
}

// orderRecorder checks that its contexts carry the first recorder's tag.
type orderRecorder struct {
	first    *recorder
	mu       sync.Mutex
	seen     []string
	untagged bool
}

func (o *orderRecorder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	if ctx.Value(recCallKey{}) == nil {
		o.mu.Lock()
		o.untagged = true
		o.mu.Unlock()
	}
	return ctx
}

func (o *orderRecorder) HandleRPC(ctx context.Context, s stats.RPCStats) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if s.IsClient() {
		return
	}
	o.seen = append(o.seen, fmt.Sprintf("%T", s)[len("*stats."):])
}

func (o *orderRecorder) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (o *orderRecorder) HandleConn(context.Context, stats.ConnStats) {}

// nopStats is a stats.Handler that does nothing.
type nopStats struct{}

func (nopStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (nopStats) HandleRPC(context.Context, stats.RPCStats)                         {}
func (nopStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (nopStats) HandleConn(context.Context, stats.ConnStats)                       {}

// TestRoleStatsHandlers gives a server one handler per role: the calls it
// serves go to one, the calls it makes back to the client to the other,
// and each sees the session once.
func TestRoleStatsHandlers(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		calling, serving := new(recorder), new(recorder)
		srv := NewServer(muxOpt(tr), WithRoleStatsHandlers(calling, serving))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if _, err := (echoClient{PeerFromContext(ctx)}).Unary(ctx, wrapperspb.String("back")); err != nil {
				return nil, err
			}
			return in, nil
		}})
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "c"})
		p := dial(t, serve(t, srv), muxOpt(tr), WithServices(callbacks))
		if _, err := (echoClient{p}).Unary(testCtx(t, 10*time.Second), wrapperspb.String("x")); err != nil {
			t.Fatal(err)
		}
		served := serving.call(t, "/test.Echo/Unary", false)
		back := calling.call(t, "/test.Echo/Unary", true)
		if back.parent != served {
			t.Errorf("the callback's TagRPC context does not derive from the served call's")
		}
		if got := serving.sequence(served); got != serverUnary {
			t.Errorf("serving handler: %s", got)
		}
		if got := calling.sequence(back); got != clientUnary {
			t.Errorf("calling handler: %s", got)
		}
		if n, m := len(serving.callsOf("/test.Echo/Unary", true)), len(calling.callsOf("/test.Echo/Unary", false)); n != 0 || m != 0 {
			t.Errorf("a handler saw the other role's calls: %d, %d", n, m)
		}
		for _, r := range []*recorder{calling, serving} {
			r.mu.Lock()
			if len(r.conns) != 1 {
				t.Errorf("%d sessions tagged, want 1", len(r.conns))
			}
			r.mu.Unlock()
		}
	})
}

// BenchmarkUnaryStatsHandler is BenchmarkUnary with a stats handler that
// does nothing on both sides: what reporting a call costs, apart from
// what a handler does with it.
func BenchmarkUnaryStatsHandler(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			srv := NewServer(muxOpt(tr), WithStatsHandler(nopStats{}))
			srv.RegisterService(&echoDesc, &echoImpl{name: "s"})
			c := echoClient{dial(b, serve(b, srv), muxOpt(tr), WithStatsHandler(nopStats{}))}
			ctx := context.Background()
			req := wrapperspb.String(string(make([]byte, 62)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Unary(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStatsHandlerEndAfterDeadlineTrailer ends calls by their deadline
// while their handlers return at once: the trailer the deadline's
// goroutine writes is reported before End, whichever goroutine gets
// there first.
func TestStatsHandlerEndAfterDeadlineTrailer(t *testing.T) {
	rec := new(recorder)
	srv := NewServer(WithStatsHandler(rec))
	srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	p := dial(t, serve(t, srv))
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		echoClient{p}.Unary(ctx, wrapperspb.String("x"))
		cancel()
	}
	eventually(t, 5*time.Second, "every call's End", func() bool {
		cs := rec.callsOf("/test.Echo/Unary", false)
		if len(cs) != 50 {
			return false
		}
		for _, c := range cs {
			select {
			case <-c.ended:
			default:
				return false
			}
		}
		return true
	})
	for _, c := range rec.callsOf("/test.Echo/Unary", false) {
		if seq := rec.names(c); strings.Contains(seq, "End") && strings.Contains(seq, "OutTrailer") && strings.Index(seq, "OutTrailer") > strings.Index(seq, "End") {
			t.Fatalf("a call ended by its deadline reported %s: OutTrailer after End", seq)
		}
	}
}
