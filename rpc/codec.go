package rpc

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Messages are protocol buffers, encoded straight into the part that
// carries them. As with gRPC-Go's codec, they may be messages of the
// protobuf API of github.com/golang/protobuf as well as of the current
// one: jhump/protoreflect's dynamic.Message, which grpcurl calls with, is
// one.

// protoMessage returns m as a message of the current protobuf API: m
// itself, or a message of the older API seen through it. ok is false if m
// is neither.
func protoMessage(m any) (pm proto.Message, ok bool) {
	switch m := m.(type) {
	case proto.Message:
		return m, true
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m), true
	}
	return nil, false
}

// isNilMessage reports whether m is nil, or a nil pointer to a protocol
// buffer message: what a handler that forgot its response returns.
func isNilMessage(m any) bool {
	if m == nil {
		return true
	}
	pm, ok := protoMessage(m)
	return ok && !pm.ProtoReflect().IsValid()
}

// outMessage is a message to send, its encoded size computed once: the
// buffer its part is assembled in is sized from it, and the encoding
// reuses it.
type outMessage struct {
	pm   proto.Message
	size int
}

// newOutMessage prepares m for sending, or fails with the status the call
// should end with.
func newOutMessage(m any) (outMessage, error) {
	pm, ok := protoMessage(m)
	if !ok {
		return outMessage{}, status.Errorf(codes.Internal, "rpc: message of type %T is not a protocol buffer", m)
	}
	return outMessage{pm: pm, size: proto.Size(pm)}, nil
}

// partLen returns the length of the message's part.
func (o outMessage) partLen() int { return partPrefixLen + o.size }

// appendPart appends the message's part, compressed with comp unless it
// is nil, or fails with the status the call should end with: an encoding
// error, or ResourceExhausted for a message over limit (before
// compression).
func (o outMessage) appendPart(b []byte, limit int, comp encoding.Compressor) ([]byte, error) {
	if comp != nil {
		return o.appendCompressedPart(b, limit, comp)
	}
	b, start := beginPart(b, partMessage)
	// A message over limit is encoded all the same, since an encoding
	// error says more and comes first.
	opts := proto.MarshalOptions{UseCachedSize: o.size <= limit}
	b, err := opts.MarshalAppend(b, o.pm)
	if err != nil {
		return b[:start], status.Errorf(codes.Internal, "rpc: encoding %T: %v", o.pm, err)
	}
	if n := len(b) - start - partPrefixLen; n > limit {
		return b[:start], status.Errorf(codes.ResourceExhausted, "trying to send message larger than max (%d vs. %d)", n, limit)
	}
	return endPart(b, start), nil
}

// appendMessage appends m as a message part, or fails with the status the
// call should end with.
func appendMessage(b []byte, m any, limit int) ([]byte, error) {
	o, err := newOutMessage(m)
	if err != nil {
		return b, err
	}
	return o.appendPart(b, limit, nil)
}

// decodeMessage decodes p into m; m does not keep p.
func decodeMessage(p []byte, m any) error {
	pm, ok := protoMessage(m)
	if !ok {
		return status.Errorf(codes.Internal, "rpc: message of type %T is not a protocol buffer", m)
	}
	return proto.Unmarshal(p, pm)
}
