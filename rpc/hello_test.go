package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// tokenAuth admits a session whose metadata holds "authorization:
// Bearer token-<agent-id>", with the agent's id as its Identity's Name,
// refuses an unknown token with Unauthenticated and the agent "banned"
// with PermissionDenied, and counts the sessions it saw.
type tokenAuth struct {
	seen atomic.Int64
}

func (a *tokenAuth) authenticate(ctx context.Context, h *SessionHello) (Identity, error) {
	a.seen.Add(1)
	id := strings.Join(h.Metadata.Get("agent-id"), "")
	switch {
	case id == "banned":
		return Identity{}, status.Error(codes.PermissionDenied, "agent banned is banned")
	case strings.Join(h.Metadata.Get("authorization"), "") != "Bearer token-"+id:
		return Identity{}, status.Errorf(codes.Unauthenticated, "bad token for agent %q", id)
	}
	return Identity{Name: id, Info: h.Services}, nil
}

// agentCredentials are an agent's session metadata, with its own token
// or, when token is set, that one.
func agentCredentials(id, token string) DialOption {
	if token == "" {
		token = "token-" + id
	}
	return WithSessionMetadata(metadata.Pairs("agent-id", id, "authorization", "Bearer "+token))
}

// identityEcho answers a unary call with the caller's Identity's Name.
func identityEcho(handled *atomic.Int64) *funcEcho {
	return &funcEcho{unary: func(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if handled != nil {
			handled.Add(1)
		}
		id, ok := IdentityFromContext(ctx)
		if !ok {
			return nil, status.Error(codes.Internal, "no identity in the handler's context")
		}
		return wrapperspb.String(id.Name), nil
	}}
}

// TestSessionHelloAdmitsWithIdentity dials with session metadata and
// callbacks: the authenticator sees the metadata and the client's
// services, the handlers of every call see the Identity it returned, and
// so does OnPeer, which runs only once the session is admitted; each side
// knows the services the other serves, and the server calls the client
// back.
func TestSessionHelloAdmitsWithIdentity(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		auth := &tokenAuth{}
		onPeer := make(chan *Peer, 1)
		srv := NewServer(muxOpt(tr), WithAuthenticator(auth.authenticate), OnPeer(func(p *Peer) { onPeer <- p }))
		srv.RegisterService(&echoDesc, identityEcho(nil))
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, &echoImpl{name: "agent"})
		p := dial(t, serve(t, srv), muxOpt(tr), agentCredentials("a1", ""), WithServices(callbacks))

		for range 3 {
			out, err := echoClient{p}.Unary(ctx, wrapperspb.String("who"))
			if err != nil || out.Value != "a1" {
				t.Fatalf("the handler saw identity %q, %v; want a1", out.GetValue(), err)
			}
		}
		if got := p.RemoteServices(); !slices.Equal(got, []string{"test.Echo"}) {
			t.Errorf("the client sees the server serve %q", got)
		}
		if id := p.Identity(); id.Name != "" {
			t.Errorf("the client's Peer has identity %+v, want none", id)
		}
		sp := await(t, onPeer, 5*time.Second, "OnPeer")
		if id := sp.Identity(); id.Name != "a1" || !slices.Equal(id.Info.([]string), []string{"test.Echo"}) {
			t.Errorf("OnPeer's peer has identity %+v", id)
		}
		if !sp.ServesRemotely("test.Echo") || sp.ServesRemotely("test.Other") {
			t.Errorf("the server sees the client serve %q", sp.RemoteServices())
		}
		checkEcho(t, ctx, sp, "agent")
		if n := auth.seen.Load(); n != 1 {
			t.Errorf("the authenticator ran %d times for one session", n)
		}
	})
}

// TestSessionHelloRefusal dials with a bad token, as a banned agent, and
// to an authenticator that fails with a plain error: each Dial fails at
// once with the refusal's code and reason, and no handler and no OnPeer
// ever runs. A Client's fail-fast calls fail with the refusal's code too,
// and a pipelined NewPeer's calls fail with it without being processed.
func TestSessionHelloRefusal(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 20*time.Second)
		auth := &tokenAuth{}
		var handled, peers atomic.Int64
		srv := NewServer(muxOpt(tr), WithAuthenticator(func(ctx context.Context, h *SessionHello) (Identity, error) {
			if h.Metadata.Get("agent-id")[0] == "plain" {
				return Identity{}, errors.New("the directory is down")
			}
			return auth.authenticate(ctx, h)
		}), OnPeer(func(*Peer) { peers.Add(1) }))
		srv.RegisterService(&echoDesc, identityEcho(&handled))
		addr := serve(t, srv)

		for _, c := range []struct {
			id, token string
			code      codes.Code
			reason    string
		}{
			{"a1", "stolen", codes.Unauthenticated, `bad token for agent "a1"`},
			{"banned", "", codes.PermissionDenied, "agent banned is banned"},
			{"plain", "", codes.Unauthenticated, "the directory is down"},
		} {
			start := time.Now()
			_, err := Dial(ctx, addr, muxOpt(tr), agentCredentials(c.id, c.token))
			wantStatus(t, err, c.code, c.reason)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the refusal of %s took %v", c.id, d)
			}
		}

		cl, err := NewClient(addr, muxOpt(tr), agentCredentials("a1", "stolen"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		cl.Connect()
		eventually(t, 5*time.Second, "the Client's TransientFailure", func() bool {
			_, err := echoClient{cl}.Unary(ctx, wrapperspb.String("x"))
			return status.Code(err) == codes.Unauthenticated
		})

		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := mux.Client(conn, &mux.Config{Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		np := NewPeer(sess, agentCredentials("a1", "stolen"))
		defer np.Close()
		_, err = echoClient{np}.Unary(ctx, wrapperspb.String("x"))
		if code := status.Code(err); code != codes.Unauthenticated && !IsRetrySafe(err) {
			t.Errorf("a call before the refusal arrived failed with %v, want Unauthenticated or never processed", err)
		}
		<-np.Done()
		_, err = echoClient{np}.Unary(ctx, wrapperspb.String("x"))
		wantStatus(t, err, codes.Unauthenticated, "bad token")

		if n, m := handled.Load(), peers.Load(); n != 0 || m != 0 {
			t.Errorf("refused sessions ran %d handlers and %d OnPeers", n, m)
		}
		if n := len(srv.Peers()); n != 0 {
			t.Errorf("the server lists %d peers", n)
		}
		p := dial(t, addr, muxOpt(tr), agentCredentials("a2", ""))
		if out, err := (echoClient{p}).Unary(ctx, wrapperspb.String("x")); err != nil || out.Value != "a2" {
			t.Errorf("a good agent after the refusals: %q, %v", out.GetValue(), err)
		}
	})
}

// TestSlowAuthenticatorDelaysNoOtherSession holds the authenticator of
// 8 sessions until the test lets them go, and dials 40 other agents
// meanwhile, each admitted at once; the slow ones are admitted when let
// go. A Server bounded to 4 authenticators at once runs no more than 4,
// and a session whose authenticator outlasts the handshake timeout is
// refused with DeadlineExceeded.
func TestSlowAuthenticatorDelaysNoOtherSession(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	release := make(chan struct{})
	var running, peak atomic.Int64
	slowAuth := func(ctx context.Context, h *SessionHello) (Identity, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		id := h.Metadata.Get("agent-id")[0]
		if strings.HasPrefix(id, "slow") {
			select {
			case <-release:
			case <-ctx.Done():
				return Identity{}, ctx.Err()
			}
		}
		return Identity{Name: id}, nil
	}
	srv := NewServer(WithAuthenticator(slowAuth))
	srv.RegisterService(&echoDesc, identityEcho(nil))
	addr := serve(t, srv)
	var slow sync.WaitGroup
	slowErrs := make(chan error, 8)
	for i := range 8 {
		slow.Add(1)
		go func() {
			defer slow.Done()
			p, err := Dial(ctx, addr, agentCredentials(fmt.Sprint("slow", i), ""))
			if err == nil {
				p.Close()
			}
			slowErrs <- err
		}()
	}
	eventually(t, 5*time.Second, "the slow authenticators to run", func() bool { return running.Load() == 8 })
	for i := range 40 {
		start := time.Now()
		p := dial(t, addr, agentCredentials(fmt.Sprint("fast", i), ""))
		if d := time.Since(start); d > time.Second {
			t.Errorf("agent fast%d waited %v for its session behind the slow ones", i, d)
		}
		if out, err := (echoClient{p}).Unary(ctx, wrapperspb.String("x")); err != nil || out.Value != fmt.Sprint("fast", i) {
			t.Fatalf("agent fast%d's call: %q, %v", i, out.GetValue(), err)
		}
		p.Close()
	}
	close(release)
	slow.Wait()
	for range 8 {
		if err := <-slowErrs; err != nil {
			t.Errorf("a slow agent: %v", err)
		}
	}

	bounded := NewServer(WithAuthenticator(slowAuth), MuxConfig(&mux.Config{MaxPendingHandshakes: 4, HandshakeTimeout: 2 * time.Second}))
	bounded.RegisterService(&echoDesc, identityEcho(nil))
	addr = serve(t, bounded)
	peak.Store(0)
	release = make(chan struct{}) // never closed: every one times out
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, err := Dial(ctx, addr, agentCredentials(fmt.Sprint("slow", i), ""))
			errs <- err
		}()
		// One mux handshake at a time: the bound of 4 holds for them too,
		// and a Listener sheds the oldest beyond it.
		eventually(t, 5*time.Second, "the session to be up", func() bool { return running.Load() == int64(min(i+1, 4)) })
	}
	for range 8 {
		err := await(t, errs, 10*time.Second, "a slow agent's refusal")
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("a slow agent past the handshake timeout: %v, want DeadlineExceeded", err)
		}
	}
	if n := peak.Load(); n > 4 {
		t.Errorf("%d authenticators ran at once, bound 4", n)
	}
}

// TestSessionWithoutHelloEnds opens a native session that never sends its
// hello, and a call on it: at the handshake timeout the session ends with
// a GOAWAY PROTOCOL_ERROR "no session hello", and the call was never
// processed.
func TestSessionWithoutHelloEnds(t *testing.T) {
	var handled atomic.Int64
	srv := NewServer(MuxConfig(&mux.Config{HandshakeTimeout: 300 * time.Millisecond}))
	srv.RegisterService(&echoDesc, identityEcho(&handled))
	addr := serve(t, srv)
	ctx := testCtx(t, 10*time.Second)
	sess, err := mux.Dial(ctx, "tcp", addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Kill()
	st, err := sess.OpenType(ctx, StreamType)
	if err != nil {
		t.Fatal(err)
	}
	st.WriteLast(rawParts(appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, ""), mustMessage(t, "x"), appendEmptyPart(nil, partClientEnd)))
	select {
	case <-sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session without a hello still runs 5 s later")
	}
	var g *mux.GoAwayError
	if !errors.As(sess.Err(), &g) || g.Code != mux.GoAwayProtocolError || string(g.Debug) != "no session hello" {
		t.Errorf("the session ended with %v, want the GOAWAY PROTOCOL_ERROR \"no session hello\"", sess.Err())
	}
	if n := handled.Load(); n != 0 {
		t.Errorf("%d calls of a session without a hello were processed", n)
	}
}

// TestMalformedHelloIsRefused sends hellos by hand: garbage, a hello
// without a version, a part of another kind, and metadata that breaks the
// rules are refused with InvalidArgument; a hello of a later version is
// admitted in version 1; a second hello stream is reset and the session
// goes on.
func TestMalformedHelloIsRefused(t *testing.T) {
	srv := NewServer()
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	addr := serve(t, srv)
	ctx := testCtx(t, 20*time.Second)
	exchange := func(wire []byte) (hello, *mux.Session) {
		t.Helper()
		sess, err := mux.Dial(ctx, "tcp", addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sess.Kill() })
		st, err := sess.OpenType(ctx, HelloStreamType)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.WriteLast(wire)
		r := partReader{st: st}
		defer r.release()
		kind, payload, err := r.next()
		if err != nil || kind != partWelcome {
			t.Fatalf("no welcome: kind %d, %v", kind, err)
		}
		w, err := parseHello(payload, true)
		if err != nil {
			t.Fatal(err)
		}
		return w, sess
	}
	badEntry := append([]byte{0x12, 0x07, 0x0a, 0x01, 'K', 0x12, 0x02}, "v1"...) // key "K": upper-case
	for name, wire := range map[string][]byte{
		"garbage":     rawParts(part(partHello, 0xff, 0xff, 0xff)),
		"no version":  rawParts(part(partHello)),
		"call header": appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, ""),
		"bad entry":   rawParts(part(partHello, append([]byte{0x08, 0x01}, badEntry...)...)),
	} {
		w, sess := exchange(wire)
		if w.code != codes.InvalidArgument {
			t.Errorf("%s: welcome %+v, want InvalidArgument", name, w)
		}
		select {
		case <-sess.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("%s: the refused session still runs", name)
		}
	}
	w, sess := exchange(rawParts(part(partHello, 0x08, 0x07)))
	if w.code != codes.OK || w.version != 1 || !slices.Equal(w.services, []string{"test.Echo"}) {
		t.Fatalf("a hello of version 7: %+v, want admitted in version 1", w)
	}
	again, err := sess.OpenType(ctx, HelloStreamType)
	if err != nil {
		t.Fatal(err)
	}
	again.WriteLast(appendHello(nil, nil, nil))
	var re *mux.ResetError
	if _, err := again.Read(make([]byte, 1)); !errors.As(err, &re) || re.Code != mux.ResetCancel || !re.Remote {
		t.Errorf("a second hello: %v, want a RESET CANCEL", err)
	}
	st, err := sess.OpenType(ctx, StreamType)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.WriteLast(rawParts(appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, ""), mustMessage(t, "x"), appendEmptyPart(nil, partClientEnd)))
	a, err := readAnswer(st)
	if err != nil || a.status != nil || a.messages != 1 {
		t.Errorf("a call after the second hello: %+v, %v", a, err)
	}
}

// mustMessage returns a MESSAGE part of the string s.
func mustMessage(t testing.TB, s string) []byte {
	t.Helper()
	b, err := appendMessage(nil, wrapperspb.String(s), DefaultMaxSendMsgSize)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuthenticatorSeesTLSState serves mutual TLS: the authenticator names
// the peer after its verified client certificate, so handlers know who
// called without looking at the connection.
func TestAuthenticatorSeesTLSState(t *testing.T) {
	pki := newTestPKI(t)
	byCertificate := func(ctx context.Context, h *SessionHello) (Identity, error) {
		if h.TLS == nil || len(h.TLS.VerifiedChains) == 0 {
			return Identity{}, status.Error(codes.Unauthenticated, "no verified client certificate")
		}
		return Identity{Name: h.TLS.VerifiedChains[0][0].Subject.CommonName}, nil
	}
	srv := NewServer(WithAuthenticator(byCertificate))
	srv.RegisterService(&echoDesc, identityEcho(nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, srv, tls.NewListener(ln, pki.mutualServerTLS()))
	p := dial(t, ln.Addr().String(), WithTLS(pki.clientTLS(pki.client)))
	out, err := echoClient{p}.Unary(testCtx(t, 10*time.Second), wrapperspb.String("who"))
	if err != nil || out.Value != clientName {
		t.Fatalf("the handler saw %q, %v; want %q", out.GetValue(), err, clientName)
	}
}

// TestSessionMetadataFuncRunsForEverySession has a Client's token come
// from a function: each session the Client makes, reconnections
// included, carries a fresh one, and a function that fails fails the
// session's dial with its error.
func TestSessionMetadataFuncRunsForEverySession(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	var tokens []string
	var mu sync.Mutex
	srv := NewServer(WithAuthenticator(func(ctx context.Context, h *SessionHello) (Identity, error) {
		mu.Lock()
		defer mu.Unlock()
		tokens = append(tokens, h.Metadata.Get("authorization")...)
		return Identity{Name: "a1"}, nil
	}))
	srv.RegisterService(&echoDesc, identityEcho(nil))
	addr := serve(t, srv)
	var issued atomic.Int64
	fresh := WithSessionMetadataFunc(func(context.Context) (metadata.MD, error) {
		return metadata.Pairs("authorization", fmt.Sprint("token-", issued.Add(1))), nil
	})
	cl, err := NewClient(addr, fresh, WithConnectParams(ConnectParams{Backoff: backoffConfig(10*time.Millisecond, 100*time.Millisecond), MinConnectTimeout: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 3 {
		if out, err := (echoClient{cl}).Unary(ctx, wrapperspb.String("x"), WaitForReady(true)); err != nil || out.Value != "a1" {
			t.Fatalf("call %d: %q, %v", i, out.GetValue(), err)
		}
		onlyPeer(t, srv).Session().Kill() // the Client reconnects by itself
		eventually(t, 5*time.Second, "the Client's new session", func() bool { return issued.Load() == int64(i+2) && len(srv.Peers()) == 1 })
	}
	mu.Lock()
	got := slices.Clone(tokens)
	mu.Unlock()
	if len(got) < 3 || got[0] != "token-1" || got[1] != "token-2" || got[2] != "token-3" {
		t.Errorf("the sessions carried tokens %q, want a fresh one each", got)
	}

	_, err = Dial(ctx, addr, WithSessionMetadataFunc(func(context.Context) (metadata.MD, error) {
		return nil, errors.New("the token service is down")
	}))
	if err == nil || !strings.Contains(err.Error(), "the token service is down") {
		t.Errorf("a failing metadata function: %v", err)
	}
}
