// Package grpcshape converts between the rpc package's types and gRPC-Go's
// types of the same shape (stream descriptions, service information, the
// server transport stream behind grpc.SetHeader), for the packages that
// bridge the two: interceptors and rpc/grpcstub.
package grpcshape

import (
	"context"

	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// GRPCStreamDesc describes a streaming method with grpc's type.
func GRPCStreamDesc(d *rpc.StreamDesc) *grpc.StreamDesc {
	if d == nil {
		return &grpc.StreamDesc{}
	}
	gd := &grpc.StreamDesc{StreamName: d.StreamName, ServerStreams: d.ServerStreams, ClientStreams: d.ClientStreams}
	if h := d.Handler; h != nil {
		gd.Handler = func(srv any, stream grpc.ServerStream) error { return h(srv, stream) }
	}
	return gd
}

// RPCStreamDesc describes a streaming method with the rpc package's type.
func RPCStreamDesc(gd *grpc.StreamDesc) *rpc.StreamDesc {
	if gd == nil {
		return &rpc.StreamDesc{}
	}
	d := &rpc.StreamDesc{StreamName: gd.StreamName, ServerStreams: gd.ServerStreams, ClientStreams: gd.ClientStreams}
	if h := gd.Handler; h != nil {
		d.Handler = func(srv any, stream rpc.ServerStream) error { return h(srv, stream) }
	}
	return d
}

// ServiceInfo reports the services registered on srv with grpc's types,
// as (*grpc.Server).GetServiceInfo does.
func ServiceInfo(srv *rpc.Server) map[string]grpc.ServiceInfo {
	info := srv.GetServiceInfo()
	out := make(map[string]grpc.ServiceInfo, len(info))
	for name, si := range info {
		ms := make([]grpc.MethodInfo, len(si.Methods))
		for i, m := range si.Methods {
			ms[i] = grpc.MethodInfo{Name: m.Name, IsClientStream: m.IsClientStream, IsServerStream: m.IsServerStream}
		}
		out[name] = grpc.ServiceInfo{Methods: ms, Metadata: si.Metadata}
	}
	return out
}

// WithTransportStream returns ctx with a grpc.ServerTransportStream for
// the call it belongs to, unless it has one already, so that
// grpc.SetHeader, grpc.SendHeader, grpc.SetTrailer and grpc.Method work
// in the handler. ss is the call's stream, nil for a unary call.
func WithTransportStream(ctx context.Context, method string, ss rpc.ServerStream) context.Context {
	if grpc.ServerTransportStreamFromContext(ctx) != nil {
		return ctx
	}
	return grpc.NewContextWithServerTransportStream(ctx, &transportStream{ctx: ctx, method: method, ss: ss})
}

// StreamWithTransportStream returns ss, or ss in a context that has a
// grpc.ServerTransportStream if its own has none (see
// WithTransportStream).
func StreamWithTransportStream(ss rpc.ServerStream, method string) rpc.ServerStream {
	ctx := ss.Context()
	if grpc.ServerTransportStreamFromContext(ctx) != nil {
		return ss
	}
	return &serverStream{ServerStream: ss, ctx: WithTransportStream(ctx, method, ss)}
}

// serverStream gives a stream the context that holds its transport stream.
type serverStream struct {
	rpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// transportStream is what grpc.SetHeader and friends find in a handler's
// context. It hands their metadata to the rpc package's call: through the
// stream of a streaming call, through the rpc package's context functions
// for a unary one.
type transportStream struct {
	ctx    context.Context
	method string
	ss     rpc.ServerStream // nil for unary calls
}

func (t *transportStream) Method() string { return t.method }

func (t *transportStream) SetHeader(md metadata.MD) error {
	if t.ss != nil {
		return t.ss.SetHeader(md)
	}
	return rpc.SetHeader(t.ctx, md)
}

func (t *transportStream) SendHeader(md metadata.MD) error {
	if t.ss != nil {
		return t.ss.SendHeader(md)
	}
	return rpc.SendHeader(t.ctx, md)
}

func (t *transportStream) SetTrailer(md metadata.MD) error {
	if t.ss != nil {
		t.ss.SetTrailer(md)
		return nil
	}
	return rpc.SetTrailer(t.ctx, md)
}
