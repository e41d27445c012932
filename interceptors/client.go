package interceptors

import (
	"context"

	"github.com/muxrpc/muxrpc/internal/grpcshape"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
)

// UnaryClient returns an option that runs the interceptors, the first
// outermost, around every unary call the Peer makes (or, given to
// rpc.NewServer, every unary call the server makes back to its clients).
//
// The interceptors get a nil *grpc.ClientConn and the call's grpc call
// options; the invoker they call makes the call on the Peer, with the call
// options they pass on and the caller's rpc call options.
func UnaryClient(is ...grpc.UnaryClientInterceptor) rpc.Option {
	chain := chainUnaryClient(append([]grpc.UnaryClientInterceptor(nil), is...))
	return rpc.ChainUnaryClient(func(ctx context.Context, method string, req, reply any, cc rpc.ClientConnInterface, invoker rpc.UnaryInvoker, opts ...rpc.CallOption) error {
		if chain == nil {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		gopts, own := splitCallOptions(opts)
		return chain(ctx, method, req, reply, nil, func(ctx context.Context, method string, req, reply any, _ *grpc.ClientConn, gopts ...grpc.CallOption) error {
			return invoker(ctx, method, req, reply, cc, callOptions(own, gopts)...)
		}, gopts...)
	})
}

// StreamClient returns an option that runs the interceptors, the first
// outermost, around every streaming call the Peer makes (or, given to
// rpc.NewServer, every streaming call the server makes back to its
// clients).
//
// The interceptors get a nil *grpc.ClientConn, a *grpc.StreamDesc made
// from the call's rpc.StreamDesc and the call's grpc call options; the
// stream the outermost one returns, its own wrapper or the rpc package's
// stream, is the stream the caller gets.
func StreamClient(is ...grpc.StreamClientInterceptor) rpc.Option {
	chain := chainStreamClient(append([]grpc.StreamClientInterceptor(nil), is...))
	return rpc.ChainStreamClient(func(ctx context.Context, desc *rpc.StreamDesc, cc rpc.ClientConnInterface, method string, streamer rpc.Streamer, opts ...rpc.CallOption) (rpc.ClientStream, error) {
		if chain == nil {
			return streamer(ctx, desc, cc, method, opts...)
		}
		gopts, own := splitCallOptions(opts)
		gdesc := grpcshape.GRPCStreamDesc(desc)
		cs, err := chain(ctx, gdesc, nil, method, func(ctx context.Context, gd *grpc.StreamDesc, _ *grpc.ClientConn, method string, gopts ...grpc.CallOption) (grpc.ClientStream, error) {
			d := desc
			if gd != gdesc || gd.StreamName != desc.StreamName || gd.ServerStreams != desc.ServerStreams || gd.ClientStreams != desc.ClientStreams {
				d = grpcshape.RPCStreamDesc(gd)
			}
			cs, err := streamer(ctx, d, cc, method, callOptions(own, gopts)...)
			if err != nil {
				return nil, err
			}
			return cs, nil
		}, gopts...)
		if err != nil {
			return nil, err
		}
		return cs, nil
	})
}

// splitCallOptions separates the grpc call options, which the interceptors
// see, from the others, which go around them to the call.
func splitCallOptions(opts []rpc.CallOption) (gopts []grpc.CallOption, own []rpc.CallOption) {
	for _, o := range opts {
		if g, ok := o.(grpc.CallOption); ok {
			gopts = append(gopts, g)
		} else {
			own = append(own, o)
		}
	}
	return gopts, own
}

// callOptions returns the rpc call options of a call: the grpc ones the
// interceptors passed on, which the rpc package honours, then the
// caller's own rpc options.
func callOptions(own []rpc.CallOption, gopts []grpc.CallOption) []rpc.CallOption {
	if len(gopts) == 0 {
		return own
	}
	opts := make([]rpc.CallOption, 0, len(gopts)+len(own))
	for _, g := range gopts {
		opts = append(opts, g)
	}
	return append(opts, own...)
}

// chainUnaryClient makes one interceptor of several, the first outermost.
func chainUnaryClient(is []grpc.UnaryClientInterceptor) grpc.UnaryClientInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return is[0](ctx, method, req, reply, cc, unaryClientNext(is[1:], invoker), opts...)
	}
}

func unaryClientNext(is []grpc.UnaryClientInterceptor, last grpc.UnaryInvoker) grpc.UnaryInvoker {
	if len(is) == 0 {
		return last
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		return is[0](ctx, method, req, reply, cc, unaryClientNext(is[1:], last), opts...)
	}
}

// chainStreamClient makes one interceptor of several, the first outermost.
func chainStreamClient(is []grpc.StreamClientInterceptor) grpc.StreamClientInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return is[0](ctx, desc, cc, method, streamClientNext(is[1:], streamer), opts...)
	}
}

func streamClientNext(is []grpc.StreamClientInterceptor, last grpc.Streamer) grpc.Streamer {
	if len(is) == 0 {
		return last
	}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return is[0](ctx, desc, cc, method, streamClientNext(is[1:], last), opts...)
	}
}
