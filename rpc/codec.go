package rpc

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Messages are protocol buffers, encoded straight into the part that
// carries them.

// appendMessage appends m as a message part, or fails with the status the
// call should end with.
func appendMessage(b []byte, m any, limit int) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return b, status.Errorf(codes.Internal, "rpc: message of type %T is not a protocol buffer", m)
	}
	b, start := beginPart(b, partMessage)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, pm)
	if err != nil {
		return b[:start], status.Errorf(codes.Internal, "rpc: encoding %T: %v", m, err)
	}
	if n := len(b) - start - partPrefixLen; n > limit {
		return b[:start], status.Errorf(codes.ResourceExhausted, "trying to send message larger than max (%d vs. %d)", n, limit)
	}
	return endPart(b, start), nil
}

// decodeMessage decodes p into m; m does not keep p.
func decodeMessage(p []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "rpc: message of type %T is not a protocol buffer", m)
	}
	return proto.Unmarshal(p, pm)
}

// bufPool recycles the buffers that calls assemble their writes in.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(bp *[]byte) {
	if cap(*bp) > 64<<10 {
		return
	}
	*bp = (*bp)[:0]
	bufPool.Put(bp)
}
