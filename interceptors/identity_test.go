package interceptors_test

import (
	"context"
	"slices"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestSessionIdentityWithPerCallAuth authenticates sessions once, with
// the Server's Authenticator, and authorizes each call with
// go-grpc-middleware's auth interceptor, unchanged, from the session's
// Identity: Unary is open to every admitted agent, Ping to operators
// only, and the AuthFunc sees the Identity in every call's context.
func TestSessionIdentityWithPerCallAuth(t *testing.T) {
	authenticate := func(ctx context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		if got := h.Metadata.Get("authorization"); len(got) != 1 || got[0] != "Bearer secret" {
			return rpc.Identity{}, status.Error(codes.Unauthenticated, "bad token")
		}
		role := h.Metadata.Get("role")
		return rpc.Identity{Name: h.Metadata.Get("agent-id")[0], Info: role}, nil
	}
	authorize := func(ctx context.Context) (context.Context, error) {
		id, ok := rpc.IdentityFromContext(ctx)
		if !ok || id.Name == "" {
			return nil, status.Error(codes.Unauthenticated, "no session identity")
		}
		method, _ := rpc.Method(ctx)
		if method == "/test.Echo/Ping" && !slices.Contains(id.Info.([]string), "operator") {
			return nil, status.Errorf(codes.PermissionDenied, "%s may not ping", id.Name)
		}
		return ctx, nil
	}
	srv := rpc.NewServer(rpc.WithAuthenticator(authenticate),
		interceptors.UnaryServer(auth.UnaryServerInterceptor(authorize)),
		interceptors.StreamServer(auth.StreamServerInterceptor(authorize)))
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	addr := serve(t, srv)
	ctx := testCtx(t)

	agent := dial(t, addr, rpc.WithSessionMetadata(metadata.Pairs("authorization", "Bearer secret", "agent-id", "a1")))
	if out, err := (echoClient{agent}).Unary(ctx, wrapperspb.String("hi")); err != nil || out.Value != "server:hi" {
		t.Fatalf("an agent's Unary: %q, %v", out.GetValue(), err)
	}
	if _, err := (echoClient{agent}).Ping(ctx, wrapperspb.String("hi")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an agent's Ping: %v, want PermissionDenied", err)
	}
	operator := dial(t, addr, rpc.WithSessionMetadata(metadata.Pairs("authorization", "Bearer secret", "agent-id", "op", "role", "operator")))
	if _, err := (echoClient{operator}).Ping(ctx, wrapperspb.String("hi")); err != nil {
		t.Fatalf("an operator's Ping: %v", err)
	}
	if _, err := rpc.Dial(ctx, addr, rpc.WithSessionMetadata(metadata.Pairs("authorization", "Bearer stolen"))); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a bad token: %v, want Unauthenticated", err)
	}
}
