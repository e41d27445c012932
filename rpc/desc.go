package rpc

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// StreamType is the mux stream type that carries calls, so that calls and
// other protocols share a session without seeing each other's streams.
const StreamType = 2

// ClientConnInterface is what generated clients call through. A *Peer
// implements it, whichever side of the session it is.
type ClientConnInterface interface {
	// Invoke performs a unary call and fills reply with the response.
	Invoke(ctx context.Context, method string, args, reply any, opts ...CallOption) error
	// NewStream begins a streaming call.
	NewStream(ctx context.Context, desc *StreamDesc, method string, opts ...CallOption) (ClientStream, error)
}

// ServiceRegistrar is what generated code registers services with. A
// *Server implements it.
type ServiceRegistrar interface {
	// RegisterService registers a service and its implementation.
	RegisterService(desc *ServiceDesc, impl any)
}

// ServiceDesc describes a service: its name, unary methods and streaming
// methods. Generated code declares one per service.
type ServiceDesc struct {
	ServiceName string
	// HandlerType is a pointer to the service's server interface; the
	// implementation passed to RegisterService must implement it.
	HandlerType any
	Methods     []MethodDesc
	Streams     []StreamDesc
	Metadata    any // the .proto file name, by convention
}

// MethodDesc describes a unary method.
type MethodDesc struct {
	MethodName string
	Handler    MethodHandler
}

// MethodHandler decodes a unary request with dec, calls the method of srv
// through interceptor (when non-nil), and returns the response.
type MethodHandler func(srv any, ctx context.Context, dec func(any) error, interceptor UnaryServerInterceptor) (any, error)

// StreamDesc describes a streaming method.
type StreamDesc struct {
	StreamName    string
	Handler       StreamHandler
	ServerStreams bool // the server sends a stream of messages
	ClientStreams bool // the client sends a stream of messages
}

// StreamHandler serves one streaming call of srv on stream.
type StreamHandler func(srv any, stream ServerStream) error

// ClientStream is the caller's side of a streaming call. It has the method
// set of grpc.ClientStream.
type ClientStream interface {
	// Header waits for and returns the header metadata from the server.
	Header() (metadata.MD, error)
	// Trailer returns the trailer metadata, once RecvMsg has returned a
	// non-nil error.
	Trailer() metadata.MD
	// CloseSend ends the caller's direction of the stream.
	CloseSend() error
	// Context returns the call's context.
	Context() context.Context
	// SendMsg sends a message. It may be called from one goroutine while
	// another calls RecvMsg.
	SendMsg(m any) error
	// RecvMsg receives the next message into m. It returns io.EOF when the
	// call ended with status OK, and the call's error otherwise.
	RecvMsg(m any) error
}

// ServerStream is the handler's side of a streaming call. It has the
// method set of grpc.ServerStream.
type ServerStream interface {
	// SetHeader adds header metadata, sent with the first message or when
	// SendHeader is called.
	SetHeader(metadata.MD) error
	// SendHeader sends the header metadata now.
	SendHeader(metadata.MD) error
	// SetTrailer adds trailer metadata, sent when the handler returns.
	SetTrailer(metadata.MD)
	// Context returns the call's context.
	Context() context.Context
	// SendMsg sends a message to the caller, waiting while the caller's
	// window is full.
	SendMsg(m any) error
	// RecvMsg receives the caller's next message into m; io.EOF when the
	// caller has closed its direction.
	RecvMsg(m any) error
}

// UnaryServerInfo describes a unary call to interceptors.
type UnaryServerInfo struct {
	Server     any    // the service implementation
	FullMethod string // "/package.Service/Method"
}

// UnaryHandler is the next step of a unary call: the method itself or the
// rest of the interceptor chain.
type UnaryHandler func(ctx context.Context, req any) (any, error)

// UnaryServerInterceptor intercepts unary calls on the serving side.
type UnaryServerInterceptor func(ctx context.Context, req any, info *UnaryServerInfo, handler UnaryHandler) (any, error)

// StreamServerInfo describes a streaming call to interceptors.
type StreamServerInfo struct {
	FullMethod     string
	IsClientStream bool
	IsServerStream bool
}

// StreamServerInterceptor intercepts streaming calls on the serving side.
type StreamServerInterceptor func(srv any, ss ServerStream, info *StreamServerInfo, handler StreamHandler) error

// UnaryInvoker is the next step of an outgoing unary call.
type UnaryInvoker func(ctx context.Context, method string, req, reply any, cc ClientConnInterface, opts ...CallOption) error

// UnaryClientInterceptor intercepts outgoing unary calls.
type UnaryClientInterceptor func(ctx context.Context, method string, req, reply any, cc ClientConnInterface, invoker UnaryInvoker, opts ...CallOption) error

// Streamer is the next step of an outgoing streaming call.
type Streamer func(ctx context.Context, desc *StreamDesc, cc ClientConnInterface, method string, opts ...CallOption) (ClientStream, error)

// StreamClientInterceptor intercepts outgoing streaming calls.
type StreamClientInterceptor func(ctx context.Context, desc *StreamDesc, cc ClientConnInterface, method string, streamer Streamer, opts ...CallOption) (ClientStream, error)

// ServiceInfo describes a registered service, as (*Server).GetServiceInfo
// reports it.
type ServiceInfo struct {
	Methods  []MethodInfo
	Metadata any
}

// MethodInfo describes one method of a registered service.
type MethodInfo struct {
	Name           string
	IsClientStream bool
	IsServerStream bool
}
