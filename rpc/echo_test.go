package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The test service, written as generated code would be: test.Echo with
// one method of each kind, on wrapperspb.StringValue.

type echoServer interface {
	Unary(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	ServerStream(*wrapperspb.StringValue, ServerStreamingServer[wrapperspb.StringValue]) error
	ClientStream(ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error
	Bidi(BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error
}

var echoDesc = ServiceDesc{
	ServiceName: "test.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(echoServer).Unary(ctx, in)
			}
			info := &UnaryServerInfo{Server: srv, FullMethod: "/test.Echo/Unary"}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(echoServer).Unary(ctx, req.(*wrapperspb.StringValue))
			})
		},
	}},
	Streams: []StreamDesc{
		{StreamName: "ServerStream", ServerStreams: true, Handler: func(srv any, stream ServerStream) error {
			in := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(echoServer).ServerStream(in, &GenericServerStream[wrapperspb.StringValue, wrapperspb.StringValue]{ServerStream: stream})
		}},
		{StreamName: "ClientStream", ClientStreams: true, Handler: func(srv any, stream ServerStream) error {
			return srv.(echoServer).ClientStream(&GenericServerStream[wrapperspb.StringValue, wrapperspb.StringValue]{ServerStream: stream})
		}},
		{StreamName: "Bidi", ServerStreams: true, ClientStreams: true, Handler: func(srv any, stream ServerStream) error {
			return srv.(echoServer).Bidi(&GenericServerStream[wrapperspb.StringValue, wrapperspb.StringValue]{ServerStream: stream})
		}},
	},
}

type echoClient struct{ cc ClientConnInterface }

func (c echoClient) Unary(ctx context.Context, in *wrapperspb.StringValue, opts ...CallOption) (*wrapperspb.StringValue, error) {
	out := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, "/test.Echo/Unary", in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

func (c echoClient) ServerStream(ctx context.Context, in *wrapperspb.StringValue, opts ...CallOption) (ServerStreamingClient[wrapperspb.StringValue], error) {
	stream, err := c.cc.NewStream(ctx, &echoDesc.Streams[0], "/test.Echo/ServerStream", opts...)
	if err != nil {
		return nil, err
	}
	x := &GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]{ClientStream: stream}
	if err := x.SendMsg(in); err != nil {
		return nil, err
	}
	if err := x.CloseSend(); err != nil {
		return nil, err
	}
	return x, nil
}

func (c echoClient) ClientStream(ctx context.Context, opts ...CallOption) (ClientStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue], error) {
	stream, err := c.cc.NewStream(ctx, &echoDesc.Streams[1], "/test.Echo/ClientStream", opts...)
	if err != nil {
		return nil, err
	}
	return &GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]{ClientStream: stream}, nil
}

func (c echoClient) Bidi(ctx context.Context, opts ...CallOption) (BidiStreamingClient[wrapperspb.StringValue, wrapperspb.StringValue], error) {
	stream, err := c.cc.NewStream(ctx, &echoDesc.Streams[2], "/test.Echo/Bidi", opts...)
	if err != nil {
		return nil, err
	}
	return &GenericClientStream[wrapperspb.StringValue, wrapperspb.StringValue]{ClientStream: stream}, nil
}

// echoImpl echoes with a prefix, so tests can tell who answered. Special
// requests trigger failures.
type echoImpl struct {
	name string
}

func (e *echoImpl) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	switch {
	case in.Value == "panic":
		panic("asked to")
	case in.Value == "fail":
		return nil, status.Error(codes.FailedPrecondition, "asked to fail")
	case strings.HasPrefix(in.Value, "wait"):
		<-ctx.Done()
		return nil, ctx.Err()
	case in.Value == "priority":
		return wrapperspb.String(fmt.Sprint(callFromContext(ctx).st.Priority())), nil
	}
	return wrapperspb.String(e.name + ":" + in.Value), nil
}

func (e *echoImpl) ServerStream(in *wrapperspb.StringValue, s ServerStreamingServer[wrapperspb.StringValue]) error {
	for i := 0; i < 3; i++ {
		if err := s.Send(wrapperspb.String(e.name + ":" + in.Value)); err != nil {
			return err
		}
	}
	return nil
}

func (e *echoImpl) ClientStream(s ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	var all []string
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(wrapperspb.String(e.name + ":" + strings.Join(all, ",")))
		}
		if err != nil {
			return err
		}
		all = append(all, in.Value)
	}
}

func (e *echoImpl) Bidi(s BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if in.Value == "priority" {
			in.Value = fmt.Sprint(callFromContext(s.Context()).st.Priority())
		}
		if err := s.Send(wrapperspb.String(e.name + ":" + in.Value)); err != nil {
			return err
		}
	}
}
