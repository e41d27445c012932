package rpc

import "context"

// Interceptor chains: the first interceptor is outermost, and each calls
// the next through the handler or invoker it is given.

func chainUnaryServer(is []UnaryServerInterceptor) UnaryServerInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, req any, info *UnaryServerInfo, handler UnaryHandler) (any, error) {
		return is[0](ctx, req, info, unaryServerNext(is[1:], info, handler))
	}
}

func unaryServerNext(is []UnaryServerInterceptor, info *UnaryServerInfo, last UnaryHandler) UnaryHandler {
	if len(is) == 0 {
		return last
	}
	return func(ctx context.Context, req any) (any, error) {
		return is[0](ctx, req, info, unaryServerNext(is[1:], info, last))
	}
}

func chainStreamServer(is []StreamServerInterceptor) StreamServerInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(srv any, ss ServerStream, info *StreamServerInfo, handler StreamHandler) error {
		return is[0](srv, ss, info, streamServerNext(is[1:], info, handler))
	}
}

func streamServerNext(is []StreamServerInterceptor, info *StreamServerInfo, last StreamHandler) StreamHandler {
	if len(is) == 0 {
		return last
	}
	return func(srv any, ss ServerStream) error {
		return is[0](srv, ss, info, streamServerNext(is[1:], info, last))
	}
}

func chainUnaryClient(is []UnaryClientInterceptor) UnaryClientInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, method string, req, reply any, cc ClientConnInterface, invoker UnaryInvoker, opts ...CallOption) error {
		return is[0](ctx, method, req, reply, cc, unaryClientNext(is[1:], invoker), opts...)
	}
}

func unaryClientNext(is []UnaryClientInterceptor, last UnaryInvoker) UnaryInvoker {
	if len(is) == 0 {
		return last
	}
	return func(ctx context.Context, method string, req, reply any, cc ClientConnInterface, opts ...CallOption) error {
		return is[0](ctx, method, req, reply, cc, unaryClientNext(is[1:], last), opts...)
	}
}

func chainStreamClient(is []StreamClientInterceptor) StreamClientInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, desc *StreamDesc, cc ClientConnInterface, method string, streamer Streamer, opts ...CallOption) (ClientStream, error) {
		return is[0](ctx, desc, cc, method, streamClientNext(is[1:], streamer), opts...)
	}
}

func streamClientNext(is []StreamClientInterceptor, last Streamer) Streamer {
	if len(is) == 0 {
		return last
	}
	return func(ctx context.Context, desc *StreamDesc, cc ClientConnInterface, method string, opts ...CallOption) (ClientStream, error) {
		return is[0](ctx, desc, cc, method, streamClientNext(is[1:], last), opts...)
	}
}
