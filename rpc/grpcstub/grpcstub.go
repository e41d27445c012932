package grpcstub

import (
	"context"

	"github.com/muxrpc/muxrpc/internal/grpcshape"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
)

// Conn returns cc as a grpc.ClientConnInterface: gRPC's generated
// clients call through it, and each call is cc's. The grpc.CallOption
// values of a call reach cc, and its interceptors, as they are.
func Conn(cc rpc.ClientConnInterface) grpc.ClientConnInterface { return conn{cc} }

type conn struct{ cc rpc.ClientConnInterface }

// Invoke performs a unary call on the muxrpc connection.
func (c conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.cc.Invoke(ctx, method, args, reply, callOptions(opts)...)
}

// NewStream begins a streaming call on the muxrpc connection. The
// rpc.ClientStream it returns is a grpc.ClientStream: the method sets are
// the same.
func (c conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := c.cc.NewStream(ctx, &rpc.StreamDesc{StreamName: desc.StreamName, ServerStreams: desc.ServerStreams, ClientStreams: desc.ClientStreams}, method, callOptions(opts)...)
	if err != nil {
		return nil, err
	}
	return cs, nil
}

// callOptions returns a call's grpc options as rpc call options. It
// leaves out grpc.StaticMethod, which generated code passes on every call
// and which asks nothing of it, so that a call without options of its
// own allocates no slice.
func callOptions(opts []grpc.CallOption) []rpc.CallOption {
	n := 0
	for _, o := range opts {
		if _, static := o.(grpc.StaticMethodCallOption); !static {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]rpc.CallOption, 0, n)
	for _, o := range opts {
		if _, static := o.(grpc.StaticMethodCallOption); !static {
			out = append(out, o)
		}
	}
	return out
}

// Registrar returns srv as a grpc.ServiceRegistrar, on which gRPC's
// generated code registers services, and which reports srv's services
// as a *grpc.Server does. Like any registration, it must come before srv
// serves.
func Registrar(srv *rpc.Server) interface {
	grpc.ServiceRegistrar
	GetServiceInfo() map[string]grpc.ServiceInfo
} {
	return registrar{srv}
}

type registrar struct{ srv *rpc.Server }

// RegisterService registers a service described with grpc's types on the
// rpc.Server, panicking as rpc.Server.RegisterService does.
func (r registrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	r.srv.RegisterService(serviceDesc(desc), impl)
}

// GetServiceInfo reports the rpc.Server's services with grpc's types.
func (r registrar) GetServiceInfo() map[string]grpc.ServiceInfo { return grpcshape.ServiceInfo(r.srv) }

// serviceDesc describes a service given with grpc's types with the rpc
// package's. Each handler gets a context in which grpc.SetHeader and
// friends work, and the rpc.Server's interceptors as grpc's.
func serviceDesc(gd *grpc.ServiceDesc) *rpc.ServiceDesc {
	d := &rpc.ServiceDesc{ServiceName: gd.ServiceName, HandlerType: gd.HandlerType, Metadata: gd.Metadata}
	for _, m := range gd.Methods {
		d.Methods = append(d.Methods, rpc.MethodDesc{MethodName: m.MethodName, Handler: unaryHandler("/"+gd.ServiceName+"/"+m.MethodName, m.Handler)})
	}
	for _, s := range gd.Streams {
		d.Streams = append(d.Streams, rpc.StreamDesc{
			StreamName:    s.StreamName,
			Handler:       streamHandler("/"+gd.ServiceName+"/"+s.StreamName, s.Handler),
			ServerStreams: s.ServerStreams,
			ClientStreams: s.ClientStreams,
		})
	}
	return d
}

func unaryHandler(method string, h grpc.MethodHandler) rpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor rpc.UnaryServerInterceptor) (any, error) {
		ctx = grpcshape.WithTransportStream(ctx, method, nil)
		if interceptor == nil {
			return h(srv, ctx, dec, nil)
		}
		return h(srv, ctx, dec, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return interceptor(ctx, req, &rpc.UnaryServerInfo{Server: info.Server, FullMethod: info.FullMethod}, rpc.UnaryHandler(handler))
		})
	}
}

func streamHandler(method string, h grpc.StreamHandler) rpc.StreamHandler {
	return func(srv any, ss rpc.ServerStream) error {
		return h(srv, grpcshape.StreamWithTransportStream(ss, method))
	}
}
