package grpcstub_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestHeaderTrailerUnary checks grpc.Header and grpc.Trailer on unary
// calls, succeeding and failing with a status, through grpcstub and on a
// bare Peer with muxrpc's generated client.
func TestHeaderTrailerUnary(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		s := start(t, tr)
		ctx := testCtx(t, 20*time.Second)
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
		for _, fail := range []bool{false, true} {
			var h, tl metadata.MD
			req := &testgrpc.SimpleRequest{Payload: payload(3)}
			if fail {
				req.ResponseStatus = failWith(codes.FailedPrecondition, "no")
			}
			_, err := tc.UnaryCall(ctx, req, grpc.Header(&h), grpc.Trailer(&tl))
			if fail {
				wantCode(t, err, codes.FailedPrecondition, "no")
			} else if err != nil {
				t.Fatal(err)
			}
			wantMD(t, "grpcstub header", h, "h", "unary")
			wantMD(t, "grpcstub trailer", tl, "t", "unary")

			h, tl = nil, nil
			msg := "x"
			if fail {
				msg = "fail"
			}
			_, err = echov1.NewEchoClient(s.peer).Unary(ctx, &echov1.EchoRequest{Message: msg}, grpc.Header(&h), grpc.Trailer(&tl))
			if fail {
				wantCode(t, err, codes.NotFound, "asked to fail")
			} else if err != nil {
				t.Fatal(err)
			}
			wantMD(t, "bare peer header", h, "h", "echo")
			wantMD(t, "bare peer trailer", tl, "t", "echo")
		}
	})
}

// TestHeaderTrailerStreams checks grpc.Header and grpc.Trailer on
// server-streaming and bidi calls: filled once RecvMsg returned io.EOF or
// the call's status, not before.
func TestHeaderTrailerStreams(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		s := start(t, tr)
		ctx := testCtx(t, 20*time.Second)
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
		ec := echov1.NewEchoClient(s.peer)
		for _, fail := range []bool{false, true} {
			check := func(what string, n int, err error, h, tl metadata.MD, wantH, wantT string, code codes.Code) {
				t.Helper()
				if n != 2 {
					t.Errorf("%s: %d responses, want 2", what, n)
				}
				if fail {
					wantCode(t, err, code, "fail")
				} else if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				wantMD(t, what+" header", h, "h", wantH)
				wantMD(t, what+" trailer", tl, "t", wantT)
			}

			// Server streaming, through grpcstub.
			var h, tl metadata.MD
			req := &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1, 2)}
			if fail {
				req.ResponseStatus = failWith(codes.Aborted, "fail")
			}
			ss, err := tc.StreamingOutputCall(ctx, req, grpc.Header(&h), grpc.Trailer(&tl))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ss.Recv(); err != nil {
				t.Fatal(err)
			}
			if h != nil || tl != nil {
				t.Errorf("header %v, trailer %v filled before the stream ended", h, tl)
			}
			n, err := drain(ss)
			check("grpcstub server stream", n+1, err, h, tl, "server-stream", "server-stream", codes.Aborted)

			// Bidi, through grpcstub.
			h, tl = nil, nil
			bs, err := tc.FullDuplexCall(ctx, grpc.Header(&h), grpc.Trailer(&tl))
			if err != nil {
				t.Fatal(err)
			}
			bs.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1, 1)})
			if fail {
				bs.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: failWith(codes.Aborted, "fail")})
			}
			bs.CloseSend()
			n, err = drain(bs)
			check("grpcstub bidi", n, err, h, tl, "bidi", "bidi", codes.Aborted)

			// Server streaming and bidi on a bare Peer.
			msg := "x"
			if fail {
				msg = "fail"
			}
			h, tl = nil, nil
			es, err := ec.ServerStream(ctx, &echov1.ServerStreamRequest{Message: msg, Count: 2}, grpc.Header(&h), grpc.Trailer(&tl))
			if err != nil {
				t.Fatal(err)
			}
			n, err = drain(es)
			check("bare server stream", n, err, h, tl, "echo-stream", "echo-stream", codes.NotFound)

			h, tl = nil, nil
			eb, err := ec.Bidi(ctx, grpc.Header(&h), grpc.Trailer(&tl))
			if err != nil {
				t.Fatal(err)
			}
			eb.Send(&echov1.EchoRequest{Message: "a"})
			eb.Send(&echov1.EchoRequest{Message: "b"})
			if fail {
				eb.Send(&echov1.EchoRequest{Message: "fail"})
			}
			eb.CloseSend()
			n, err = drain(eb)
			check("bare bidi", n, err, h, tl, "echo-bidi", "echo-bidi", codes.NotFound)
		}
	})
}

// TestMessageSizeOptions checks grpc.MaxCallRecvMsgSize and
// grpc.MaxCallSendMsgSize: over the limit ResourceExhausted, under it
// the call passes.
func TestMessageSizeOptions(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		s := start(t, tr)
		ctx := testCtx(t, 20*time.Second)
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
		ec := echov1.NewEchoClient(s.peer)

		_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 2000}, grpc.MaxCallRecvMsgSize(1000))
		wantCode(t, err, codes.ResourceExhausted, "")
		if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 500}, grpc.MaxCallRecvMsgSize(1000)); err != nil {
			t.Errorf("a response under the receive limit: %v", err)
		}
		_, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload(2000)}, grpc.MaxCallSendMsgSize(1000))
		wantCode(t, err, codes.ResourceExhausted, "")
		if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload(500)}, grpc.MaxCallSendMsgSize(1000)); err != nil {
			t.Errorf("a request under the send limit: %v", err)
		}

		// Streams.
		ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(100, 2000)}, grpc.MaxCallRecvMsgSize(1000))
		if err != nil {
			t.Fatal(err)
		}
		n, err := drain(ss)
		if n != 1 {
			t.Errorf("%d responses under the limit, want 1", n)
		}
		wantCode(t, err, codes.ResourceExhausted, "")
		bs, err := tc.FullDuplexCall(ctx, grpc.MaxCallSendMsgSize(1000))
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(500)}); err != nil {
			t.Errorf("a stream's request under the send limit: %v", err)
		}
		err = bs.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(2000)})
		wantCode(t, err, codes.ResourceExhausted, "")
		bs.CloseSend()
		if _, err := drain(bs); err != nil {
			t.Errorf("the stream after a refused request: %v", err)
		}

		// Bare Peer.
		big := strings.Repeat("x", 2000)
		_, err = ec.Unary(ctx, &echov1.EchoRequest{Message: big}, grpc.MaxCallSendMsgSize(1000))
		wantCode(t, err, codes.ResourceExhausted, "")
		_, err = ec.Unary(ctx, &echov1.EchoRequest{Message: big}, grpc.MaxCallRecvMsgSize(1000))
		wantCode(t, err, codes.ResourceExhausted, "")
		if _, err := ec.Unary(ctx, &echov1.EchoRequest{Message: big}, grpc.MaxCallRecvMsgSize(3000), grpc.MaxCallSendMsgSize(3000)); err != nil {
			t.Errorf("bare peer under the limits: %v", err)
		}
	})
}

var fastConnect = rpc.WithConnectParams(rpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
	MinConnectTimeout: 2 * time.Second,
})

// TestWaitForReady checks grpc.WaitForReady(true) through a Client
// whose server starts listening a little later: the call waits and
// succeeds; without it, the call fails fast with Unavailable.
func TestWaitForReady(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ln := listen(t)
		addr := ln.Addr().String()
		ln.Close() // nothing listens there yet
		c, err := rpc.NewClient("passthrough:///"+addr, fastConnect, muxOpt(tr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx := testCtx(t, 20*time.Second)
		deadline := time.Now().Add(5 * time.Second)
		for c.Connect(); c.GetState() != connectivity.TransientFailure; c.Connect() {
			if time.Now().After(deadline) {
				t.Fatalf("the Client is %v, not TransientFailure", c.GetState())
			}
			time.Sleep(5 * time.Millisecond)
		}
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(c))
		start := time.Now()
		_, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		wantCode(t, err, codes.Unavailable, "")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("a fail-fast call took %v", d)
		}
		_, err = echov1.NewEchoClient(c).Unary(ctx, &echov1.EchoRequest{Message: "x"}, grpc.FailFast(true))
		wantCode(t, err, codes.Unavailable, "")

		done := make(chan error, 2)
		go func() {
			_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			done <- err
		}()
		go func() {
			_, err := echov1.NewEchoClient(c).Unary(ctx, &echov1.EchoRequest{Message: "x"}, grpc.WaitForReady(true))
			done <- err
		}()
		time.Sleep(100 * time.Millisecond)
		ln2, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listening again on %s: %v", addr, err)
		}
		serveOn(t, newServer(muxOpt(tr)), ln2)
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("a WaitForReady call: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("a WaitForReady call still waits")
			}
		}
	})
}

// TestPeerOption checks grpc.Peer: filled with the server's address,
// and with credentials.TLSInfo over TLS, on unary and streaming calls.
func TestPeerOption(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, useTLS := range []bool{false, true} {
			var s setup
			if useTLS {
				s = startTLS(t, tr)
			} else {
				s = start(t, tr)
			}
			ctx := testCtx(t, 20*time.Second)
			check := func(what string, p *peer.Peer) {
				t.Helper()
				if p.Addr == nil || p.Addr.String() != s.addr {
					t.Errorf("%s (TLS %v): peer address %v, want %s", what, useTLS, p.Addr, s.addr)
				}
				info, isTLS := p.AuthInfo.(credentials.TLSInfo)
				if isTLS != useTLS {
					t.Errorf("%s (TLS %v): AuthInfo %T", what, useTLS, p.AuthInfo)
				}
				if isTLS && (!info.State.HandshakeComplete || info.SecurityLevel != credentials.PrivacyAndIntegrity) {
					t.Errorf("%s: TLSInfo %+v", what, info.CommonAuthInfo)
				}
			}
			tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
			var p1, p2, p3, p4 peer.Peer
			if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Peer(&p1)); err != nil {
				t.Fatal(err)
			}
			check("grpcstub unary", &p1)
			ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1)}, grpc.Peer(&p2))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := drain(ss); err != nil {
				t.Fatal(err)
			}
			check("grpcstub stream", &p2)
			ec := echov1.NewEchoClient(s.peer)
			if _, err := ec.Unary(ctx, &echov1.EchoRequest{Message: "fail"}, grpc.Peer(&p3)); status.Code(err) != codes.NotFound {
				t.Fatal(err)
			}
			check("bare failing unary", &p3)
			es, err := ec.ServerStream(ctx, &echov1.ServerStreamRequest{Count: 1}, grpc.Peer(&p4))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := drain(es); err != nil {
				t.Fatal(err)
			}
			check("bare stream", &p4)
		}
	})
}

// testCreds are per-RPC credentials that record the RequestInfo they saw.
type testCreds struct {
	secure bool
	fail   error
	mu     sync.Mutex
	seen   []credentials.RequestInfo
	uris   []string
}

func (c *testCreds) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, errors.New("no RequestInfo in the context")
	}
	c.mu.Lock()
	c.seen = append(c.seen, ri)
	c.uris = append(c.uris, uri...)
	c.mu.Unlock()
	if c.fail != nil {
		return nil, c.fail
	}
	return map[string]string{"Authorization": "Bearer t0k"}, nil
}

func (c *testCreds) RequireTransportSecurity() bool { return c.secure }

func (c *testCreds) last(t testing.TB) credentials.RequestInfo {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) == 0 {
		t.Fatal("GetRequestMetadata was not called")
	}
	return c.seen[len(c.seen)-1]
}

func securityLevel(ai credentials.AuthInfo) credentials.SecurityLevel {
	if c, ok := ai.(interface {
		GetCommonAuthInfo() credentials.CommonAuthInfo
	}); ok {
		return c.GetCommonAuthInfo().SecurityLevel
	}
	return credentials.InvalidSecurityLevel
}

// TestPerRPCCredentials checks grpc.PerRPCCredentials: the handler sees
// the metadata; credentials requiring transport security fail with
// Unauthenticated on plaintext and pass over TLS; an error of the
// credentials fails with Unauthenticated; the RequestInfo has the method
// and the session's security level.
func TestPerRPCCredentials(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		for _, useTLS := range []bool{false, true} {
			var s setup
			level := credentials.NoSecurity
			if useTLS {
				s, level = startTLS(t, tr), credentials.PrivacyAndIntegrity
			} else {
				s = start(t, tr)
			}
			ctx := testCtx(t, 20*time.Second)
			tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
			ec := echov1.NewEchoClient(s.peer)

			creds := &testCreds{}
			out, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.PerRPCCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			if out.Username != "Bearer t0k" {
				t.Errorf("the handler saw authorization %q", out.Username)
			}
			ri := creds.last(t)
			if ri.Method != testgrpc.TestService_UnaryCall_FullMethodName {
				t.Errorf("RequestInfo.Method = %q", ri.Method)
			}
			if got := securityLevel(ri.AuthInfo); got != level {
				t.Errorf("TLS %v: security level %v, want %v", useTLS, got, level)
			}
			if u := creds.uris[len(creds.uris)-1]; !strings.HasSuffix(u, "/grpc.testing.TestService") {
				t.Errorf("URI %q", u)
			}
			eo, err := ec.Unary(ctx, &echov1.EchoRequest{Message: "auth"}, grpc.PerRPCCredentials(creds))
			if err != nil || eo.Message != "Bearer t0k" {
				t.Errorf("bare peer with credentials: %v, %v", eo, err)
			}
			ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1)}, grpc.PerRPCCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := drain(ss); err != nil {
				t.Fatal(err)
			}
			if m := creds.last(t).Method; m != testgrpc.TestService_StreamingOutputCall_FullMethodName {
				t.Errorf("stream's RequestInfo.Method = %q", m)
			}

			secure := &testCreds{secure: true}
			_, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.PerRPCCredentials(secure))
			_, berr := ec.Unary(ctx, &echov1.EchoRequest{Message: "auth"}, grpc.PerRPCCredentials(secure))
			_, serr := tc.FullDuplexCall(ctx, grpc.PerRPCCredentials(secure))
			for _, err := range []error{err, berr, serr} {
				if useTLS && err != nil {
					t.Errorf("secure credentials over TLS: %v", err)
				}
				if !useTLS {
					wantCode(t, err, codes.Unauthenticated, "transport security")
				}
			}

			failing := &testCreds{fail: errors.New("token expired")}
			_, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.PerRPCCredentials(failing))
			wantCode(t, err, codes.Unauthenticated, "token expired")
			_, err = ec.Unary(ctx, &echov1.EchoRequest{}, grpc.PerRPCCredentials(failing))
			wantCode(t, err, codes.Unauthenticated, "token expired")
			_, err = tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{}, grpc.PerRPCCredentials(failing))
			wantCode(t, err, codes.Unauthenticated, "token expired")
		}
	})
}

// finishes records the calls of a grpc.OnFinish function.
type finishes struct {
	mu   sync.Mutex
	errs []error
}

func (f *finishes) option() grpc.CallOption {
	return grpc.OnFinish(func(err error) {
		f.mu.Lock()
		f.errs = append(f.errs, err)
		f.mu.Unlock()
	})
}

// want waits a little for the one call and checks its error's code.
func (f *finishes) want(t testing.TB, what string, code codes.Code) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.errs)
		f.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // a second call would come about now
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) != 1 {
		t.Errorf("%s: OnFinish called %d times (%v), want once", what, len(f.errs), f.errs)
		return
	}
	err := f.errs[0]
	if code == codes.OK && err != nil {
		t.Errorf("%s: OnFinish(%v), want nil", what, err)
	}
	if status.Code(err) != code {
		t.Errorf("%s: OnFinish(%v), want %v", what, err, code)
	}
}

// TestOnFinish checks grpc.OnFinish: called exactly once with the call's
// error, for unary calls and streams, on a Peer and through a Client.
func TestOnFinish(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		s := start(t, tr)
		ctx := testCtx(t, 20*time.Second)
		c, err := rpc.NewClient("passthrough:///"+s.addr, fastConnect, muxOpt(tr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, cc := range []struct {
			name string
			cc   rpc.ClientConnInterface
		}{{"peer", s.peer}, {"client", c}} {
			tc := testgrpc.NewTestServiceClient(grpcstub.Conn(cc.cc))
			ec := echov1.NewEchoClient(cc.cc)
			var f finishes
			tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, f.option())
			f.want(t, cc.name+" unary OK", codes.OK)
			f = finishes{}
			tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: failWith(codes.DataLoss, "lost")}, f.option())
			f.want(t, cc.name+" unary failing", codes.DataLoss)
			f = finishes{}
			ec.Unary(ctx, &echov1.EchoRequest{Message: "fail"}, f.option())
			f.want(t, cc.name+" bare unary failing", codes.NotFound)
			f = finishes{}
			tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, f.option(), grpc.CallContentSubtype("json"))
			f.want(t, cc.name+" unary refused by its options", codes.Unimplemented)

			f = finishes{}
			ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1, 1)}, f.option())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := drain(ss); err != nil {
				t.Fatal(err)
			}
			ss.Recv() // again: no second call
			f.want(t, cc.name+" stream OK", codes.OK)

			f = finishes{}
			es, err := ec.ServerStream(ctx, &echov1.ServerStreamRequest{Message: "fail", Count: 1}, f.option())
			if err != nil {
				t.Fatal(err)
			}
			drain(es)
			f.want(t, cc.name+" bare stream failing", codes.NotFound)

			// A stream whose context is cancelled while nobody receives.
			f = finishes{}
			sctx, cancel := context.WithCancel(ctx)
			bs, err := tc.FullDuplexCall(sctx, f.option())
			if err != nil {
				t.Fatal(err)
			}
			bs.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1)})
			if _, err := bs.Recv(); err != nil {
				t.Fatal(err)
			}
			cancel()
			f.want(t, cc.name+" stream cancelled", codes.Canceled)
			bs.Recv() // the call ended already: no second call
			f.want(t, cc.name+" stream cancelled, then received", codes.Canceled)
		}
	})
}

// TestOnFinishAcrossSessions checks that a Client's calls while its
// session goes away (a call in flight holds it open, so that calls sent
// to it meanwhile are refused and move to a new session) call OnFinish
// once each, with nil.
func TestOnFinishAcrossSessions(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := newServer(muxOpt(tr))
		ln := listen(t)
		serveOn(t, srv, ln)
		addr := ln.Addr().String()
		ctx := testCtx(t, 20*time.Second)
		c, err := rpc.NewClient("passthrough:///"+addr, fastConnect, muxOpt(tr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(c))
		held, err := tc.FullDuplexCall(ctx, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := held.Header(); err != nil { // the handler runs
			t.Fatal(err)
		}
		first := srv.Peers()
		if len(first) != 1 {
			t.Fatalf("%d sessions, want 1", len(first))
		}
		shut := make(chan error, 1)
		go func() { shut <- first[0].Shutdown(ctx) }()
		for range 20 {
			var f finishes
			if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true), f.option()); err != nil {
				t.Fatalf("a call while the session goes away: %v", err)
			}
			f.want(t, "a call while the session goes away", codes.OK)
		}
		held.CloseSend()
		if _, err := drain(held); err != nil {
			t.Errorf("the call in flight on the going-away session: %v", err)
		}
		select {
		case err := <-shut:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown of the first session still waits")
		}
	})
}

// namedCodec is a codec named as asked, encoding as proto does.
type namedCodec struct {
	encoding.Codec
	name string
}

func (c namedCodec) Name() string { return c.name }

// emptyOption is a user's option, as interceptors define them.
type emptyOption struct {
	grpc.EmptyCallOption
	n int
}

// TestRefusedAndHarmlessOptions checks the options that muxrpc cannot
// honour (they fail with Unimplemented, naming what) and those that ask
// nothing of it (they pass).
func TestRefusedAndHarmlessOptions(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		s := start(t, tr)
		ctx := testCtx(t, 20*time.Second)
		tc := testgrpc.NewTestServiceClient(grpcstub.Conn(s.peer))
		ec := echov1.NewEchoClient(s.peer)
		protoCodec := encoding.GetCodec(proto.Name)
		for _, c := range []struct {
			name   string
			opt    grpc.CallOption
			substr string // "" when the call passes
		}{
			{"UseCompressor identity", grpc.UseCompressor("identity"), ""},
			{"CallContentSubtype json", grpc.CallContentSubtype("json"), `"json"`},
			{"CallContentSubtype proto", grpc.CallContentSubtype("proto"), ""},
			{"ForceCodec proto", grpc.ForceCodec(namedCodec{protoCodec, "proto"}), ""},
			{"ForceCodec json", grpc.ForceCodec(namedCodec{protoCodec, "json"}), `"json"`},
			{"CallAuthority", grpc.CallAuthority("x"), "CallAuthority"},
			{"EmptyCallOption", emptyOption{n: 1}, ""},
			{"StaticMethod", grpc.StaticMethod(), ""},
			{"MaxRetryRPCBufferSize", grpc.MaxRetryRPCBufferSize(1), ""},
		} {
			check := func(what string, err error) {
				t.Helper()
				if c.substr == "" {
					if err != nil {
						t.Errorf("%s %s: %v", what, c.name, err)
					}
					return
				}
				st, _ := status.FromError(err)
				if st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), c.substr) {
					t.Errorf("%s %s: %v, want Unimplemented naming %s", what, c.name, err, c.substr)
				}
			}
			_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, c.opt)
			check("grpcstub unary", err)
			ss, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: sizes(1)}, c.opt)
			if err == nil {
				_, err = drain(ss)
			}
			check("grpcstub stream", err)
			_, err = ec.Unary(ctx, &echov1.EchoRequest{Message: "x"}, c.opt)
			check("bare unary", err)
			es, err := ec.Bidi(ctx, c.opt)
			if err == nil {
				es.Send(&echov1.EchoRequest{Message: "x"})
				es.CloseSend()
				_, err = drain(es)
			}
			check("bare bidi", err)
		}
	})
}
