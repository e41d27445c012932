package rpc

import (
	"bytes"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Compression of a call's messages (PROTOCOL.md, sections 13 and 14).
//
// The caller names a compressor in its call header and compresses its
// messages with it; a callee that has it decompresses them and compresses
// its answers with the same, naming it in its response header; a callee
// that has it not ends the call with Unimplemented before the handler
// runs. Compressors are gRPC-Go's: those of the
// google.golang.org/grpc/encoding registry (gzip, once a program imports
// google.golang.org/grpc/encoding/gzip; zstd or any other a program
// registers with encoding.RegisterCompressor). Limits apply to a message
// as its handler or caller gets it, decompressed: a compressed message
// that inflates past MaxRecvMsgSize fails with ResourceExhausted when it
// gets there, having cost no more than the limit.

// identity is gRPC's name for no compression.
const identity = "identity"

// UseCompressor compresses the call's messages with the compressor of
// that name in google.golang.org/grpc/encoding's registry, and asks the
// callee to compress its answers with it too, as grpc.UseCompressor does
// (which works the same on muxrpc calls). "identity" and "" mean no
// compression. A name that is not registered fails the call with
// Internal before it is sent; a callee that has no compressor of that
// name fails it with Unimplemented.
func UseCompressor(name string) CallOption {
	return callOption(func(c *callConfig) { c.useCompressor(name) })
}

// useCompressor sets the call's compressor, or refuses the call.
func (c *callConfig) useCompressor(name string) {
	if name == "" || name == identity {
		c.comp = nil
		return
	}
	comp := encoding.GetCompressor(name)
	if comp == nil {
		c.refuse(status.Errorf(codes.Internal, "rpc: compressor %q is not installed (register it with google.golang.org/grpc/encoding)", name))
		return
	}
	c.comp = comp
}

// compressorName returns comp's name, "" for none.
func compressorName(comp encoding.Compressor) string {
	if comp == nil {
		return ""
	}
	return comp.Name()
}

// calleeCompressor returns the compressor a call header names, nil for
// none, or the status that refuses the call: Unimplemented for a
// compressor this side has not.
func calleeCompressor(name []byte) (encoding.Compressor, *status.Status) {
	if len(name) == 0 || string(name) == identity {
		return nil, nil
	}
	comp := encoding.GetCompressor(string(name))
	if comp == nil {
		return nil, status.Newf(codes.Unimplemented, "rpc: compressor %q is not installed on this side", name)
	}
	return comp, nil
}

// callerDecompressor returns the compressor a response header names, nil
// for none, or the call's error: the callee answers with the caller's
// own, so another is a malformed answer.
func callerDecompressor(name string) (encoding.Compressor, error) {
	if name == "" || name == identity {
		return nil, nil
	}
	comp := encoding.GetCompressor(name)
	if comp == nil {
		return nil, status.Errorf(codes.Internal, "rpc: the callee compressed with %q, which is not installed here", name)
	}
	return comp, nil
}

// appendCompressedPart appends the message as a compressed MESSAGE part:
// encoded into a pooled buffer, then compressed into the part.
func (o outMessage) appendCompressedPart(b []byte, limit int, comp encoding.Compressor) ([]byte, error) {
	if o.size > limit {
		return b, status.Errorf(codes.ResourceExhausted, "trying to send message larger than max (%d vs. %d)", o.size, limit)
	}
	bp := getBuf(o.size)
	defer putBuf(bp)
	plain, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*bp)[:0], o.pm)
	*bp = plain
	if err != nil {
		return b, status.Errorf(codes.Internal, "rpc: encoding %T: %v", o.pm, err)
	}
	b, start := beginPart(b, partMessage|partCompressed)
	w := &appendWriter{b: b}
	zw, err := comp.Compress(w)
	if err == nil {
		if _, err = zw.Write(plain); err == nil {
			err = zw.Close()
		}
	}
	if err != nil {
		return w.b[:start], status.Errorf(codes.Internal, "rpc: compressing with %q: %v", comp.Name(), err)
	}
	return endPart(w.b, start), nil
}

// appendWriter is an io.Writer that appends to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// inflate decompresses p, the payload of a compressed message that r's
// buffer holds, into a buffer that becomes r's, so that take and release
// work on it as on any payload. The buffer grows as the output does, up
// to r.maxMsg: a message that inflates past it fails with
// ResourceExhausted there, a compression bomb costing no more than the
// limit.
func (r *partReader) inflate(p []byte) ([]byte, error) {
	if r.decomp == nil {
		return nil, status.Error(codes.Internal, "rpc: a compressed message, and no compressor named for it")
	}
	zr, err := r.decomp.Decompress(bytes.NewReader(p))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "rpc: decompressing a message with %q: %v", r.decomp.Name(), err)
	}
	if c, ok := zr.(io.Closer); ok {
		defer c.Close()
	}
	bp := getBuf(min(max(2*len(p), minPayloadGrowth), r.maxMsg+1))
	out := (*bp)[:0]
	for {
		if len(out) == cap(out) {
			bp, out = growBuf(bp, out, min(max(len(out), minPayloadGrowth), r.maxMsg+1-len(out)))
		}
		n, err := zr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		*bp = out
		if len(out) > r.maxMsg {
			putBuf(bp)
			return nil, &errTooLarge{kind: partMessage, size: uint32(len(out)), max: r.maxMsg, decompressed: true}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			putBuf(bp)
			return nil, status.Errorf(codes.Internal, "rpc: decompressing a message with %q: %v", r.decomp.Name(), err)
		}
	}
	if r.box != nil {
		putBuf(r.box)
	}
	r.box = bp
	return out, nil
}
