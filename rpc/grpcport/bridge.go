package grpcport

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"

	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// bridge serves an rpc.Server's services to gRPC-Go's server: each
// service described with grpc's types, each handler run as the rpc.Server
// runs it, through its interceptors, after its Authenticator.
type bridge struct {
	srv    *rpc.Server
	unary  rpc.UnaryServerInterceptor
	stream rpc.StreamServerInterceptor
}

// serviceDesc describes d, an rpc service, with grpc's types.
func (b bridge) serviceDesc(d *rpc.ServiceDesc) *grpc.ServiceDesc {
	gd := &grpc.ServiceDesc{ServiceName: d.ServiceName, HandlerType: d.HandlerType, Metadata: d.Metadata}
	for _, m := range d.Methods {
		gd.Methods = append(gd.Methods, grpc.MethodDesc{MethodName: m.MethodName, Handler: b.unaryHandler("/"+d.ServiceName+"/"+m.MethodName, m.Handler)})
	}
	for _, st := range d.Streams {
		info := &rpc.StreamServerInfo{FullMethod: "/" + d.ServiceName + "/" + st.StreamName, IsClientStream: st.ClientStreams, IsServerStream: st.ServerStreams}
		gd.Streams = append(gd.Streams, grpc.StreamDesc{
			StreamName:    st.StreamName,
			Handler:       b.streamHandler(info, st.Handler),
			ServerStreams: st.ServerStreams,
			ClientStreams: st.ClientStreams,
		})
	}
	return gd
}

func (b bridge) unaryHandler(method string, h rpc.MethodHandler) grpc.MethodHandler {
	return func(impl any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (reply any, err error) {
		ctx, err = b.callContext(ctx)
		if err != nil {
			return nil, err
		}
		defer b.recoverHandler(ctx, method, &err)
		return h(impl, ctx, dec, b.unary)
	}
}

func (b bridge) streamHandler(info *rpc.StreamServerInfo, h rpc.StreamHandler) grpc.StreamHandler {
	return func(impl any, gs grpc.ServerStream) (err error) {
		ctx, err := b.callContext(gs.Context())
		if err != nil {
			return err
		}
		defer b.recoverHandler(ctx, info.FullMethod, &err)
		ss := &serverStream{ServerStream: gs, ctx: ctx}
		if b.stream == nil {
			return h(impl, ss)
		}
		return b.stream(impl, ss, info, h)
	}
}

// callContext returns the context a gRPC call's handler runs in: gRPC's,
// with the call's transport stream where the rpc package's SetHeader and
// friends find it, and the Identity the rpc.Server's Authenticator gives
// the caller, or the status the call fails with.
func (b bridge) callContext(ctx context.Context) (context.Context, error) {
	if ts := grpc.ServerTransportStreamFromContext(ctx); ts != nil {
		ctx = rpc.NewContextWithServerTransportStream(ctx, ts)
	}
	return b.srv.Authenticate(ctx, func() *rpc.SessionHello { return callHello(ctx) })
}

// callHello describes a gRPC caller as the session hello would.
func callHello(ctx context.Context) *rpc.SessionHello {
	hello := &rpc.SessionHello{}
	hello.Metadata, _ = metadata.FromIncomingContext(ctx)
	if p, ok := peer.FromContext(ctx); ok {
		hello.RemoteAddr = p.Addr
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			hello.TLS = &ti.State
		}
	}
	return hello
}

// recoverHandler turns a handler's panic into the call's Internal error,
// as the rpc.Server does for its own calls (gRPC-Go's server would let it
// crash the process): logged with the stack by the rpc.Server's logger,
// and the status without the panic value.
func (b bridge) recoverHandler(ctx context.Context, method string, err *error) {
	r := recover()
	if r == nil {
		return
	}
	stack := debug.Stack()
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String("method", method))
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if id, _ := rpc.IdentityFromContext(ctx); id.Name != "" {
		attrs = append(attrs, slog.String("identity", id.Name))
	}
	attrs = append(attrs, slog.Any("panic", r), slog.String("stack", string(stack)))
	b.srv.Logger().LogAttrs(ctx, slog.LevelError, "rpc: handler panicked", attrs...)
	*err = status.Errorf(codes.Internal, "rpc: handler for %s panicked", method)
}

// serverStream is a gRPC stream in its handler's context.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// handshakenTLS is the gRPC server's transport credentials on a TLS port:
// the port did the TLS handshake to read the ALPN protocol, so the
// credentials only report its result.
type handshakenTLS struct{}

func (handshakenTLS) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, nil, errNotTLS
	}
	return conn, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (handshakenTLS) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errNotTLS
}

func (handshakenTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (c handshakenTLS) Clone() credentials.TransportCredentials { return c }

func (handshakenTLS) OverrideServerName(string) error { return nil }

var errNotTLS = errors.New("grpcport: not a TLS connection the port accepted")
