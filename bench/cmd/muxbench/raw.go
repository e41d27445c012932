package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
	"google.golang.org/protobuf/proto"
)

// rawFramework is the lower bound: the Bench service over a hand-written
// protocol that does only what the workloads need. Each message is a frame,
// a 1-byte kind and a 4-byte big-endian length before the protobuf
// encoding, on a connection with a 32 KiB bufio.Reader and Writer on each
// side; a side flushes only before it waits to read. One call at a time
// holds the connection: no multiplexing, metadata, deadlines,
// cancellation or flow control.
var rawFramework = &framework{
	name:  "raw",
	serve: serveRaw,
	dial:  dialRaw,
	deviations: []string{
		"raw: one call at a time per connection, so W2, W3 and W6 (concurrent calls on one connection) run serialised, the callers taking turns at a mutex, and marked †; W2-pool uses a pool of 64 connections, one per caller; W7 and W8 do not apply.",
	},
}

// The kinds of raw frames. A call starts with one of kindUnary,
// kindServerStream, kindClientStream, kindBidi; kindMessage carries the
// messages after the first, kindEnd ends a direction of a stream, and
// kindError ends a call with the error's text.
const (
	kindUnary        byte = 'u'
	kindServerStream byte = 's'
	kindClientStream byte = 'c'
	kindBidi         byte = 'b'
	kindMessage      byte = 'm'
	kindEnd          byte = 'e'
	kindError        byte = 'x'
)

// rawBufferSize is the size of each side's bufio.Reader and Writer.
const rawBufferSize = 32 << 10

// rawMaxFrame bounds a frame's length, above the largest message.
const rawMaxFrame = 16 << 20

// rawConn is one side of a raw connection: frames in and out, and the
// buffers to reuse for them.
type rawConn struct {
	nc  net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	hdr [5]byte
	in  []byte // the last frame's body; valid until the next read
	out []byte // the encoding of the frame being written
}

func newRawConn(nc net.Conn) *rawConn {
	return &rawConn{nc: nc, r: bufio.NewReaderSize(nc, rawBufferSize), w: bufio.NewWriterSize(nc, rawBufferSize)}
}

// write queues a frame of kind with m's encoding (none for a nil m).
func (c *rawConn) write(kind byte, m proto.Message) error {
	var err error
	c.out = c.out[:0]
	if m != nil {
		if c.out, err = (proto.MarshalOptions{}).MarshalAppend(c.out, m); err != nil {
			return err
		}
	}
	c.hdr[0] = kind
	binary.BigEndian.PutUint32(c.hdr[1:], uint32(len(c.out)))
	if _, err := c.w.Write(c.hdr[:]); err != nil {
		return err
	}
	_, err = c.w.Write(c.out)
	return err
}

// writeError queues a frame that ends the call with err.
func (c *rawConn) writeError(err error) error {
	c.hdr[0] = kindError
	binary.BigEndian.PutUint32(c.hdr[1:], uint32(len(err.Error())))
	if _, err := c.w.Write(c.hdr[:]); err != nil {
		return err
	}
	_, werr := c.w.WriteString(err.Error())
	return werr
}

// read flushes what is queued, since it is about to wait, and reads the
// next frame. Its body is valid until the next read.
func (c *rawConn) read() (kind byte, body []byte, err error) {
	if c.w.Buffered() > 0 {
		if err := c.w.Flush(); err != nil {
			return 0, nil, err
		}
	}
	if _, err := io.ReadFull(c.r, c.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(c.hdr[1:])
	if n > rawMaxFrame {
		return 0, nil, fmt.Errorf("raw: frame of %d bytes", n)
	}
	if cap(c.in) < int(n) {
		c.in = make([]byte, n)
	}
	c.in = c.in[:n]
	if _, err := io.ReadFull(c.r, c.in); err != nil {
		return 0, nil, err
	}
	return c.hdr[0], c.in, nil
}

// readMessage reads a frame and decodes it as a new Payload: io.EOF for
// kindEnd, the error a kindError carries, an error for any other kind but
// want.
func (c *rawConn) readMessage(want byte) (*benchpb.Payload, error) {
	kind, body, err := c.read()
	switch {
	case err != nil:
		return nil, err
	case kind == kindEnd:
		return nil, io.EOF
	case kind == kindError:
		return nil, errors.New(string(body))
	case kind != want:
		return nil, fmt.Errorf("raw: frame of kind %q, want %q", kind, want)
	}
	m := new(benchpb.Payload)
	if err := proto.Unmarshal(body, m); err != nil {
		return nil, err
	}
	return m, nil
}

type rawServer struct {
	lis   net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func serveRaw(lis net.Listener, b *benchServer) (server, error) {
	s := &rawServer{lis: lis, conns: map[net.Conn]struct{}{}}
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[nc] = struct{}{}
			s.mu.Unlock()
			go func() {
				serveRawConn(newRawConn(nc), b)
				nc.Close()
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
			}()
		}
	}()
	return s, nil
}

// serveRawConn serves the calls of one connection, one after the other,
// until the connection ends or breaks the protocol.
func serveRawConn(c *rawConn, b *benchServer) {
	recv := func() (*benchpb.Payload, error) { return c.readMessage(kindMessage) }
	send := func(m *benchpb.Payload) error { return c.write(kindMessage, m) }
	for {
		kind, body, err := c.read()
		if err != nil {
			return
		}
		var req benchpb.Payload
		if err := proto.Unmarshal(body, &req); err != nil {
			return
		}
		switch kind {
		case kindUnary:
			err = send(b.unary(&req))
		case kindServerStream:
			err = endRawCall(c, b.serverStream(context.Background(), &req, send))
		case kindClientStream:
			var sum *benchpb.Payload
			if sum, err = b.clientStream(recv); err == nil {
				err = send(sum)
			}
		case kindBidi:
			err = endRawCall(c, b.bidi(recv, send))
		default:
			return
		}
		if err != nil {
			return
		}
	}
}

// endRawCall ends a streaming call: kindEnd, or kindError with callErr.
func endRawCall(c *rawConn, callErr error) error {
	if callErr != nil {
		return c.writeError(callErr)
	}
	return c.write(kindEnd, nil)
}

func (*rawServer) callbackPeer(context.Context) (unaryCaller, error) {
	return nil, errors.New("raw has no calls from server to client")
}

func (s *rawServer) stop() {
	s.lis.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for nc := range s.conns {
		nc.Close()
	}
}

// rawClient is the client's side of a raw connection. mu is held for the
// whole of a call, streams included, so concurrent callers take turns.
type rawClient struct {
	mu sync.Mutex
	c  *rawConn
}

func dialRaw(ctx context.Context, addr string, o dialOptions) (conn, error) {
	if o.callback != nil {
		return nil, errors.New("raw has no calls from server to client")
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawClient{c: newRawConn(nc)}, nil
}

func (rc *rawClient) unary(_ context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := rc.c.write(kindUnary, in); err != nil {
		return nil, err
	}
	return rc.c.readMessage(kindMessage)
}

func (rc *rawClient) serverStream(_ context.Context, req *benchpb.Payload) (receiver, error) {
	rc.mu.Lock()
	if err := rc.c.write(kindServerStream, req); err != nil {
		rc.mu.Unlock()
		return nil, err
	}
	return &rawStream{rc: rc}, nil
}

func (rc *rawClient) bidi(context.Context) (bidiStream, error) {
	rc.mu.Lock()
	if err := rc.c.write(kindBidi, nil); err != nil {
		rc.mu.Unlock()
		return nil, err
	}
	return &rawStream{rc: rc}, nil
}

func (rc *rawClient) close() error { return rc.c.nc.Close() }

// rawStream is a streaming call in progress; it holds its client's mutex
// until Recv returns an error, io.EOF at the end included.
type rawStream struct {
	rc    *rawClient
	ended bool
}

func (s *rawStream) Send(m *benchpb.Payload) error { return s.rc.c.write(kindMessage, m) }

func (s *rawStream) CloseSend() error { return s.rc.c.write(kindEnd, nil) }

func (s *rawStream) Recv() (*benchpb.Payload, error) {
	if s.ended {
		return nil, io.EOF
	}
	m, err := s.rc.c.readMessage(kindMessage)
	if err != nil {
		s.ended = true
		s.rc.mu.Unlock()
	}
	return m, err
}
