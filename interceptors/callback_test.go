package interceptors_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// callingBack answers each call by calling the client back on the same
// session: Unary and Ping unary, then ServerStream.
type callingBack struct{ echoImpl }

func (c *callingBack) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	back := echoClient{rpc.PeerFromContext(ctx)}
	r1, err := back.Unary(ctx, in)
	if err != nil {
		return nil, err
	}
	_, err = back.Ping(ctx, in)
	ss, err2 := back.ServerStream(ctx, in, retry.WithMax(3))
	if err2 != nil {
		return nil, err2
	}
	got, err2 := recvAll(ss)
	if err2 != nil {
		return nil, err2
	}
	return wrapperspb.String(fmt.Sprintf("server(%s, Ping %v, %d streamed)", r1.Value, status.Code(err), len(got))), nil
}

// TestCallbacks runs interceptors in the other direction of a session: on
// the services a client exposes, and on the calls a server makes to them.
func TestCallbacks(t *testing.T) {
	// The server's calls to its clients carry a token, except Ping's, and
	// retry server streams.
	addToken := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "bearer secret"), method, req, reply, cc, opts...)
	}
	addStreamToken := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", "bearer secret"), desc, cc, method, opts...)
	}
	srv := rpc.NewServer(
		interceptors.UnaryClient(selector.UnaryClientInterceptor(addToken, allButPing)),
		interceptors.StreamClient(addStreamToken, retry.StreamClientInterceptor(retry.WithBackoff(retry.BackoffLinear(0)))),
	)
	srv.RegisterService(&echoDesc, &callingBack{echoImpl{name: "server"}})
	addr := serve(t, srv)

	// The client's services check the token and log; the first server
	// stream fails once with Unavailable.
	rec := &recorder{}
	logger := slogLogger(slog.New(rec))
	callbacks := rpc.NewServer(
		interceptors.UnaryServer(logging.UnaryServerInterceptor(logger), auth.UnaryServerInterceptor(checkToken)),
		interceptors.StreamServer(logging.StreamServerInterceptor(logger), auth.StreamServerInterceptor(checkToken)),
	)
	flaky := &flakyImpl{echoImpl: echoImpl{name: "client"}, failures: 1}
	callbacks.RegisterService(&echoDesc, &onlyStreamFlaky{flakyImpl: flaky})
	p := dial(t, addr, rpc.WithServices(callbacks))

	out, err := echoClient{p}.Unary(testCtx(t), wrapperspb.String("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "server(client:hi, Ping Unauthenticated, 3 streamed)"; out.Value != want {
		t.Fatalf("got %q, want %q", out.Value, want)
	}
	if got := flaky.seen("ServerStream"); len(got) != 2 || got[1] != "1" {
		t.Errorf("the client's ServerStream saw attempts %q, want a retry", got)
	}

	// The client logged the calls it served, with the server as the peer.
	for method, want := range map[string][]codes.Code{
		"Unary":        {codes.OK},
		"Ping":         {codes.Unauthenticated},
		"ServerStream": {codes.Unavailable, codes.OK},
	} {
		recs := rec.finished(method)
		if len(recs) != len(want) {
			t.Errorf("%s: %d finished records on the client, want %d", method, len(recs), len(want))
			continue
		}
		for i, code := range want {
			wantRecord(t, recs[i], map[string]string{
				"grpc.component": "server",
				"grpc.service":   "test.Echo",
				"grpc.code":      code.String(),
				"peer.address":   addr,
			})
		}
	}
}

// onlyStreamFlaky is flaky in ServerStream alone.
type onlyStreamFlaky struct{ *flakyImpl }

func (o *onlyStreamFlaky) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return o.echoImpl.Unary(ctx, in)
}

func (o *onlyStreamFlaky) Ping(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return o.echoImpl.Ping(ctx, in)
}
