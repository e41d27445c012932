package rpc

// Typed streams for generated code: each streaming method's client and
// handler see Send and Recv of its own message types, never any.

// ServerStreamingClient is the caller's side of a server-streaming call.
type ServerStreamingClient[Res any] interface {
	// Recv returns the next response, or io.EOF after the last.
	Recv() (*Res, error)
	ClientStream
}

// ServerStreamingServer is the handler's side of a server-streaming call.
type ServerStreamingServer[Res any] interface {
	// Send sends one response.
	Send(*Res) error
	ServerStream
}

// ClientStreamingClient is the caller's side of a client-streaming call.
type ClientStreamingClient[Req any, Res any] interface {
	// Send sends one request.
	Send(*Req) error
	// CloseAndRecv ends the requests and returns the response.
	CloseAndRecv() (*Res, error)
	ClientStream
}

// ClientStreamingServer is the handler's side of a client-streaming call.
type ClientStreamingServer[Req any, Res any] interface {
	// Recv returns the next request, or io.EOF after the last.
	Recv() (*Req, error)
	// SendAndClose sends the response; the handler then returns nil.
	SendAndClose(*Res) error
	ServerStream
}

// BidiStreamingClient is the caller's side of a bidirectional call.
type BidiStreamingClient[Req any, Res any] interface {
	// Send sends one request.
	Send(*Req) error
	// Recv returns the next response, or io.EOF after the last.
	Recv() (*Res, error)
	ClientStream
}

// BidiStreamingServer is the handler's side of a bidirectional call.
type BidiStreamingServer[Req any, Res any] interface {
	// Recv returns the next request, or io.EOF after the last.
	Recv() (*Req, error)
	// Send sends one response.
	Send(*Res) error
	ServerStream
}

// GenericClientStream gives a ClientStream typed methods; it implements
// the client interfaces above.
type GenericClientStream[Req any, Res any] struct {
	ClientStream
}

// Send sends one request.
func (x *GenericClientStream[Req, Res]) Send(m *Req) error { return x.ClientStream.SendMsg(m) }

// Recv returns the next response, or io.EOF after the last.
func (x *GenericClientStream[Req, Res]) Recv() (*Res, error) {
	m := new(Res)
	if err := x.ClientStream.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

// CloseAndRecv ends the requests and returns the response.
func (x *GenericClientStream[Req, Res]) CloseAndRecv() (*Res, error) {
	if err := x.ClientStream.CloseSend(); err != nil {
		return nil, err
	}
	return x.Recv()
}

// GenericServerStream gives a ServerStream typed methods; it implements
// the server interfaces above.
type GenericServerStream[Req any, Res any] struct {
	ServerStream
}

// Send sends one response.
func (x *GenericServerStream[Req, Res]) Send(m *Res) error { return x.ServerStream.SendMsg(m) }

// Recv returns the next request, or io.EOF after the last.
func (x *GenericServerStream[Req, Res]) Recv() (*Req, error) {
	m := new(Req)
	if err := x.ServerStream.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

// SendAndClose sends the response of a client-streaming call.
func (x *GenericServerStream[Req, Res]) SendAndClose(m *Res) error {
	return x.ServerStream.SendMsg(m)
}
