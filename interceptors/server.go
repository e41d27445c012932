package interceptors

import (
	"context"

	"github.com/muxrpc/muxrpc/internal/grpcshape"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
)

// UnaryServer returns a server option that runs the interceptors, the first
// outermost, around every unary call the server serves.
//
// Called with no interceptors, it only installs the grpc.ServerTransportStream
// that makes grpc.SetHeader, grpc.SendHeader, grpc.SetTrailer and grpc.Method
// work in unary handlers.
func UnaryServer(is ...grpc.UnaryServerInterceptor) rpc.ServerOption {
	chain := chainUnaryServer(append([]grpc.UnaryServerInterceptor(nil), is...))
	return rpc.ChainUnaryServer(func(ctx context.Context, req any, info *rpc.UnaryServerInfo, handler rpc.UnaryHandler) (any, error) {
		ginfo := &grpc.UnaryServerInfo{}
		if info != nil {
			ginfo.Server, ginfo.FullMethod = info.Server, info.FullMethod
		}
		if ginfo.FullMethod == "" {
			ginfo.FullMethod, _ = rpc.Method(ctx)
		}
		ctx = grpcshape.WithTransportStream(ctx, ginfo.FullMethod, nil)
		if chain == nil {
			return handler(ctx, req)
		}
		return chain(ctx, req, ginfo, grpc.UnaryHandler(handler))
	})
}

// StreamServer returns a server option that runs the interceptors, the
// first outermost, around every streaming call the server serves.
//
// The stream an interceptor passes on, its own wrapper or the one it was
// given, is the stream the handler gets. Called with no interceptors,
// StreamServer only installs the grpc.ServerTransportStream in the
// stream's context.
func StreamServer(is ...grpc.StreamServerInterceptor) rpc.ServerOption {
	chain := chainStreamServer(append([]grpc.StreamServerInterceptor(nil), is...))
	return rpc.ChainStreamServer(func(srv any, ss rpc.ServerStream, info *rpc.StreamServerInfo, handler rpc.StreamHandler) error {
		ginfo := &grpc.StreamServerInfo{}
		if info != nil {
			ginfo.FullMethod, ginfo.IsClientStream, ginfo.IsServerStream = info.FullMethod, info.IsClientStream, info.IsServerStream
		}
		if ginfo.FullMethod == "" {
			ginfo.FullMethod, _ = rpc.Method(ss.Context())
		}
		ss = grpcshape.StreamWithTransportStream(ss, ginfo.FullMethod)
		if chain == nil {
			return handler(srv, ss)
		}
		return chain(srv, ss, ginfo, func(srv any, gs grpc.ServerStream) error {
			// The method sets are the same: whatever stream the
			// interceptors pass on is an rpc.ServerStream.
			return handler(srv, gs)
		})
	})
}

// chainUnaryServer makes one interceptor of several, the first outermost.
func chainUnaryServer(is []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return is[0](ctx, req, info, unaryServerNext(is[1:], info, handler))
	}
}

func unaryServerNext(is []grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo, last grpc.UnaryHandler) grpc.UnaryHandler {
	if len(is) == 0 {
		return last
	}
	return func(ctx context.Context, req any) (any, error) {
		return is[0](ctx, req, info, unaryServerNext(is[1:], info, last))
	}
}

// chainStreamServer makes one interceptor of several, the first outermost.
func chainStreamServer(is []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return is[0](srv, ss, info, streamServerNext(is[1:], info, handler))
	}
}

func streamServerNext(is []grpc.StreamServerInterceptor, info *grpc.StreamServerInfo, last grpc.StreamHandler) grpc.StreamHandler {
	if len(is) == 0 {
		return last
	}
	return func(srv any, ss grpc.ServerStream) error {
		return is[0](srv, ss, info, streamServerNext(is[1:], info, last))
	}
}

// The stream interfaces of the two packages have the same method sets, so
// each converts to the other without a wrapper.
var (
	_ grpc.ServerStream = rpc.ServerStream(nil)
	_ rpc.ServerStream  = grpc.ServerStream(nil)
	_ grpc.ClientStream = rpc.ClientStream(nil)
	_ rpc.ClientStream  = grpc.ClientStream(nil)
)
