package rpc

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"
)

// Serving a Server's services by another protocol: what package grpcport
// needs to serve them to gRPC clients, on the same port, with the same
// interceptors and the same Authenticator, and what handlers written for
// muxrpc need to run there unchanged.

// A ServerTransportStream carries the metadata of a call that another
// protocol than muxrpc's delivers to a handler: gRPC's HTTP/2, say. It
// has the method set of grpc.ServerTransportStream, so gRPC-Go's is one.
type ServerTransportStream interface {
	// Method returns the call's full method name, "/pkg.Service/Method".
	Method() string
	// SetHeader adds header metadata, sent with the first response.
	SetHeader(md metadata.MD) error
	// SendHeader sends the header metadata now.
	SendHeader(md metadata.MD) error
	// SetTrailer adds trailer metadata, sent when the call ends.
	SetTrailer(md metadata.MD) error
}

type transportStreamKey struct{}

// NewContextWithServerTransportStream returns a copy of ctx carrying ts:
// in a handler given that context, SetHeader, SendHeader, SetTrailer and
// Method reach the call through ts. The calls this package serves need
// none: it is for calls served by another protocol.
func NewContextWithServerTransportStream(ctx context.Context, ts ServerTransportStream) context.Context {
	return context.WithValue(ctx, transportStreamKey{}, ts)
}

func transportStreamFromContext(ctx context.Context) ServerTransportStream {
	ts, _ := ctx.Value(transportStreamKey{}).(ServerTransportStream)
	return ts
}

// A RegisteredService is a service as it was registered on a Server: its
// description and its implementation.
type RegisteredService struct {
	Desc *ServiceDesc
	Impl any
}

// Services returns the services registered on the Server, by name, so
// that another protocol can serve them (package grpcport does, to gRPC
// clients). Their handlers expect the interceptors of Interceptors.
func (s *Server) Services() []RegisteredService {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RegisteredService, 0, len(s.services))
	for _, svc := range s.services {
		out = append(out, RegisteredService{Desc: svc.desc, Impl: svc.impl})
	}
	slices.SortFunc(out, func(a, b RegisteredService) int { return strings.Compare(a.Desc.ServiceName, b.Desc.ServiceName) })
	return out
}

// Interceptors returns the Server's chains of unary and streaming
// interceptors (ChainUnaryServer, ChainStreamServer), each nil if it has
// none: what the Server passes to the handlers of its services, for
// another protocol to pass the same.
func (s *Server) Interceptors() (UnaryServerInterceptor, StreamServerInterceptor) {
	return s.unaryInt, s.streamInt
}

// MessageSizeLimits returns the largest message the Server receives and
// the largest it sends in a call (MaxRecvMsgSize, MaxSendMsgSize), for
// another protocol to apply the same.
func (s *Server) MessageSizeLimits() (recv, send int) {
	return s.cfg.peer.maxRecv, s.cfg.peer.maxSend
}

type identityKey struct{}

// Authenticate runs the Server's Authenticator on a call that another
// protocol delivers, which has no session hello: hello describes the
// caller (for a gRPC call, its metadata as Metadata, no Services), and
// is called only if the Server has an Authenticator, so that a Server
// without one costs such calls nothing. Authenticate returns a copy of
// ctx in which IdentityFromContext finds the Identity, or the status
// error the call fails with: the Authenticator's refusal, as a session's
// would be. Without an Authenticator it returns ctx as it is.
func (s *Server) Authenticate(ctx context.Context, hello func() *SessionHello) (context.Context, error) {
	if s.cfg.auth == nil {
		return ctx, nil
	}
	id, err := s.cfg.auth(ctx, hello())
	if err != nil {
		return nil, helloStatus(ctx, err).Err()
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}
