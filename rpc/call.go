package rpc

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
)

// Invoke calls method ("/package.Service/Method") on the other side with
// req and fills reply with the response; a nil req is sent as an empty
// message, as in gRPC. The error carries a status: status.Code(err) is the
// call's code. A call the other side never processed fails with
// Unavailable and IsRetrySafe; Invoke retries such a call once by itself
// while the session lives. The call is in flight, for Peer.Shutdown and
// Server.GracefulStop, until Invoke returns.
func (p *Peer) Invoke(ctx context.Context, method string, req, reply any, opts ...CallOption) error {
	if p == nil {
		return errNilPeer
	}
	if p.unaryInt != nil {
		return p.unaryInt(ctx, method, req, reply, p, p.invoke, opts...)
	}
	return p.invoke(ctx, method, req, reply, p, opts...)
}

func (p *Peer) invoke(ctx context.Context, method string, req, reply any, _ ClientConnInterface, opts ...CallOption) error {
	cfg, ctx := p.cfg.startCall(ctx, method, nil, opts)
	return cfg.ended(p, p.invokeWith(ctx, method, req, reply, &cfg))
}

// errNilPeer is the error of a call on a nil *Peer: what PeerFromContext
// returns outside a handler.
var errNilPeer = grpcstatus.Error(codes.FailedPrecondition, "rpc: call on a nil *Peer: PeerFromContext returns nil outside a handler (and in the handlers of calls that came by gRPC)")

// errNilReply is the error of a unary call with a nil reply that gets a
// response: a call that fails fails with its own status, as in gRPC-Go,
// whose interop case unimplemented_method calls with nil messages.
var errNilReply = grpcstatus.Error(codes.Internal, "rpc: nil reply: Invoke needs a message to decode the response into")

// invokeWith makes a unary call on this session, as one of the attempts
// of a call configured by cfg: it sends the call again once if the
// session, still live, refused it.
func (p *Peer) invokeWith(ctx context.Context, method string, req, reply any, cfg *callConfig) error {
	if cfg.err != nil {
		return cfg.err
	}
	p.callStarts()
	defer p.callEnds()
	err := p.invokeOnce(ctx, method, req, reply, cfg)
	if err != nil && IsRetrySafe(err) && ctx.Err() == nil && !p.goingAway() {
		err = p.invokeOnce(ctx, method, req, reply, cfg)
	}
	return err
}

// invokeOnce makes one attempt at a unary call, and gives the call's
// Header and Trailer options what it received, nil for what did not
// arrive.
func (p *Peer) invokeOnce(ctx context.Context, method string, req, reply any, cfg *callConfig) error {
	var got callMetadata
	err := p.roundTrip(ctx, method, req, reply, cfg, &got)
	cfg.deliver(got)
	return err
}

// callMetadata is the metadata a call received: its response header and
// its trailer's metadata, nil for what did not arrive.
type callMetadata struct {
	header, trailer metadata.MD
}

// roundTrip sends a unary call's request and reads its answer, recording
// the metadata it receives in got.
func (p *Peer) roundTrip(ctx context.Context, method string, req, reply any, cfg *callConfig, got *callMetadata) error {
	timeout, err := callTimeout(ctx)
	if err != nil {
		return err
	}
	md, err := cfg.outgoingMetadata(ctx, p, method)
	if err != nil {
		return err
	}
	if err := checkMetadata(md); err != nil {
		return err
	}
	st, err := p.sess.OpenType(ctx, StreamType)
	if err != nil {
		return p.callError(ctx, true, err)
	}
	defer st.Close()
	if cfg.stats() != nil {
		cfg.stats().outHeader(p, method, md, compressorName(cfg.comp))
	}
	if cfg.priority != mux.PriorityNormal {
		st.SetPriority(cfg.priority)
	}
	// Watch ctx before writing: a request larger than the stream's window
	// waits for the callee's credit, and the caller's deadline must end
	// that wait too.
	aborted := noAbort // set when the stream was reset because ctx ended
	if ctx.Done() != nil {
		aborted = new(atomic.Bool) // only here, so calls without a Done pay nothing
		stop := context.AfterFunc(ctx, func() {
			aborted.Store(true)
			st.Reset(resetCode(ctx))
		})
		defer stop()
	}
	out, err := newRequest(req)
	if err != nil {
		return err
	}
	// One buffer of the right size for the whole write, so that the
	// message is encoded once into it and never moved.
	compression := compressorName(cfg.comp)
	bp := getBuf(callHeaderLen(method, md, compression) + out.partLen() + partPrefixLen)
	b := appendCallHeader((*bp)[:0], method, timeout, cfg.priority, md, compression)
	mark := len(b)
	b, err = out.appendPart(b, cfg.maxSend, cfg.comp)
	wire := len(b) - mark - partPrefixLen // the request's payload on the wire
	if err != nil {
		*bp = b
		putBuf(bp)
		return err
	}
	b = appendEmptyPart(b, partClientEnd)
	_, err = st.WriteLast(b)
	*bp = b
	putBuf(bp)
	if cfg.stats() != nil && err == nil {
		cfg.stats().outPayload(req, out.size, wire)
	}
	if err != nil && (ctx.Err() != nil || mux.IsRetrySafe(err)) {
		return p.callError(ctx, aborted.Load(), err)
	}
	// A write that failed otherwise may have met the callee's answer: a
	// callee that rejects a call without reading all of it (a message over
	// its limit, an unknown method) sends its trailer and then resets the
	// stream, and the trailer stays readable. Read on to find it.
	writeErr := err

	r := partReader{st: st, maxMsg: cfg.maxRecv, maxHeader: p.cfg.maxHeader}
	defer r.release()
	gotReply := false
	for {
		kind, payload, err := r.next()
		if err != nil {
			if writeErr != nil {
				err = writeErr
			}
			return p.callError(ctx, aborted.Load(), err)
		}
		switch kind {
		case partResponseHeader:
			if err := misplacedHeader(got.header != nil, gotReply); err != nil {
				return err
			}
			md, compression, err := parseResponseHeader(payload)
			if err != nil { // malformed: the call received no header
				return p.callError(ctx, aborted.Load(), err)
			}
			got.header = md
			if r.decomp, err = callerDecompressor(compression); err != nil {
				return err
			}
			if cfg.stats() != nil {
				cfg.stats().inHeader(md, len(payload), compression, false)
			}
		case partMessage:
			if gotReply {
				return grpcstatus.Error(codes.Internal, "rpc: unary call answered with more than one message")
			}
			if cfg.stats() != nil && got.header == nil {
				cfg.stats().inHeader(nil, 0, "", true)
			}
			if reply == nil { // found when a response comes: a failed call says why it failed, as in gRPC
				return errNilReply
			}
			if err := decodeMessage(payload, reply); err != nil {
				if _, ok := grpcstatus.FromError(err); ok {
					return err // reply is no protocol buffer
				}
				return grpcstatus.Errorf(codes.Internal, "rpc: malformed response for %s: %v", method, err)
			}
			gotReply = true
			if cfg.stats() != nil {
				cfg.stats().inPayload(reply, len(payload), r.wireLen())
			}
		case partTrailer:
			t, err := parseTrailer(payload)
			if err != nil {
				return p.callError(ctx, aborted.Load(), err)
			}
			got.trailer = t.md
			if cfg.stats() != nil {
				cfg.stats().inTrailer(t.md, len(payload))
			}
			if t.code != codes.OK {
				return t.err()
			}
			if !gotReply {
				return errNoResponse()
			}
			return nil
		default:
			return grpcstatus.Errorf(codes.Internal, "rpc: unexpected part %d in a response", kind)
		}
	}
}

// noAbort stands for the abort flag of a call whose context cannot end.
var noAbort = new(atomic.Bool)

// newRequest prepares the request m for sending. A nil request goes out
// as an empty message, as in gRPC, whose generic clients call so (a typed
// nil pointer encodes as one already).
func newRequest(m any) (outMessage, error) {
	if m == nil {
		return outMessage{}, nil
	}
	return newOutMessage(m)
}

// appendRequest appends the request m as a message part, compressed with
// comp unless it is nil.
func appendRequest(b []byte, m any, limit int, comp encoding.Compressor) ([]byte, error) {
	out, err := newRequest(m)
	if err != nil {
		return b, err
	}
	return out.appendPart(b, limit, comp)
}

// misplacedHeader returns the error of a call whose callee sent a response
// header after one (gotHeader) or after a message (gotMessage), or nil:
// a callee sends at most one, before any message (PROTOCOL.md, section
// 13).
func misplacedHeader(gotHeader, gotMessage bool) error {
	switch {
	case gotHeader:
		return grpcstatus.Error(codes.Internal, "rpc: malformed response: a second response header")
	case gotMessage:
		return grpcstatus.Error(codes.Internal, "rpc: malformed response: a response header after a message")
	}
	return nil
}

// errNoResponse is the error of a call that returns one response and
// ended with status OK without it, as gRPC words it.
func errNoResponse() error {
	return grpcstatus.Error(codes.Internal, "cardinality violation: received no response message from non-server-streaming RPC")
}

// callTimeout returns the time left before ctx's deadline, 0 for none, or
// DeadlineExceeded when it has passed.
func callTimeout(ctx context.Context) (time.Duration, error) {
	d, ok := ctx.Deadline()
	if !ok {
		return 0, nil
	}
	left := time.Until(d)
	if left <= 0 {
		return 0, grpcstatus.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	return left, nil
}

// resetCode is the reset code that tells the other side why a call was
// abandoned.
func resetCode(ctx context.Context) uint32 {
	if ctx.Err() == context.DeadlineExceeded {
		return resetDeadlineExceeded
	}
	return resetCanceled
}

// err returns the call's error that the trailer carries. The details
// alias the trailer's payload until FromProto copies them, once.
func (t *trailer) err() error {
	s := &status.Status{Code: int32(t.code), Message: t.message}
	for _, d := range t.details {
		if a, ok := parseAny(d); ok {
			s.Details = append(s.Details, a)
		}
	}
	return grpcstatus.FromProto(s).Err()
}

// NewStream begins a streaming call of method on the other side. desc says
// which directions stream. The call is in flight, for Peer.Shutdown and
// Server.GracefulStop, until RecvMsg has returned an error (io.EOF for
// status OK) or ctx has ended: a caller that abandons a stream must cancel
// its context, as in gRPC.
func (p *Peer) NewStream(ctx context.Context, desc *StreamDesc, method string, opts ...CallOption) (ClientStream, error) {
	if p == nil {
		return nil, errNilPeer
	}
	if p.streamInt != nil {
		return p.streamInt(ctx, desc, p, method, p.newStream, opts...)
	}
	return p.newStream(ctx, desc, p, method, opts...)
}

func (p *Peer) newStream(ctx context.Context, desc *StreamDesc, _ ClientConnInterface, method string, opts ...CallOption) (ClientStream, error) {
	cfg, ctx := p.cfg.startCall(ctx, method, desc, opts)
	cs, err := p.newStreamWith(ctx, desc, method, &cfg)
	if err != nil {
		return nil, cfg.ended(p, err)
	}
	return cs, nil
}

// newStreamWith begins a streaming call on this session, as one of the
// attempts of a call configured by cfg. The stream it returns ends the
// call (cfg.ended) when it ends; a failure to begin leaves that to the
// caller, which may try another session.
func (p *Peer) newStreamWith(ctx context.Context, desc *StreamDesc, method string, cfg *callConfig) (*clientStream, error) {
	if cfg.err != nil {
		return nil, cfg.err
	}
	timeout, err := callTimeout(ctx)
	if err != nil {
		return nil, err
	}
	md, err := cfg.outgoingMetadata(ctx, p, method)
	if err != nil {
		return nil, err
	}
	if err := checkMetadata(md); err != nil {
		return nil, err
	}
	p.callStarts()
	st, err := p.sess.OpenType(ctx, StreamType)
	if err != nil {
		p.callEnds()
		return nil, p.callError(ctx, true, err)
	}
	if cfg.stats() != nil {
		cfg.stats().outHeader(p, method, md, compressorName(cfg.comp))
	}
	cs := &clientStream{ctx: ctx, p: p, st: st, desc: desc, method: method, cfg: *cfg}
	cs.r = partReader{st: st, maxMsg: cs.cfg.maxRecv, maxHeader: p.cfg.maxHeader}
	if cs.cfg.priority != mux.PriorityNormal {
		st.SetPriority(cs.cfg.priority)
	}
	cs.pending = appendCallHeader(nil, method, timeout, cs.cfg.priority, md, compressorName(cs.cfg.comp))
	if desc.ClientStreams {
		// The callee may speak first: let it start the handler now.
		if _, err := st.Write(cs.pending); err != nil {
			st.Close()
			p.callEnds()
			return nil, p.callError(ctx, true, err)
		}
		cs.pending = cs.pending[:0]
	}
	if ctx.Done() != nil {
		cs.stop = context.AfterFunc(ctx, cs.contextEnded)
	}
	return cs, nil
}

// clientStream is the caller's side of a streaming call.
type clientStream struct {
	ctx      context.Context
	p        *Peer
	st       *mux.Stream
	desc     *StreamDesc
	method   string
	cfg      callConfig
	stop     func() bool
	aborted  atomic.Bool // the stream was reset because ctx ended
	released atomic.Bool // the Peer counts the call in flight no more

	smu        sync.Mutex
	pending    []byte // the call header, until the request of a call that takes one
	sentMsg    bool
	sendClosed bool

	rmu        sync.Mutex
	r          partReader
	header     metadata.MD // nil until a response header arrives
	headerDone bool        // the response header, a message or the trailer arrived
	gotMsg     bool        // a response message arrived
	peeked     []byte      // a message read by Header before RecvMsg asked
	hasPeeked  bool
	trailer    metadata.MD
	done       bool
	err        error // io.EOF after status OK
}

func (cs *clientStream) Context() context.Context { return cs.ctx }

// contextEnded aborts the call when its context ends, so that the callee
// learns of it and a RecvMsg or SendMsg waiting on the stream returns, and
// stops counting the call in flight, for a caller may abandon a stream by
// cancelling its context.
func (cs *clientStream) contextEnded() {
	cs.abort()
	cs.release(grpcstatus.FromContextError(cs.ctx.Err()).Err())
}

// abort resets the stream with the reset code that says why ctx ended.
func (cs *clientStream) abort() {
	cs.aborted.Store(true)
	cs.st.Reset(resetCode(cs.ctx))
}

// release stops counting the call in flight, once, and ends the call
// for the options that act then (cfg.ended) with err.
func (cs *clientStream) release(err error) {
	if cs.released.CompareAndSwap(false, true) {
		cs.p.callEnds()
		cs.cfg.ended(cs.p, err)
	}
}

// ctxErr returns the call's status if its context has ended while the
// session lives, and then aborts the stream, so that every operation after
// a cancel reports it, whether the context's AfterFunc has run yet or not.
// Once the session has ended, the session's error is the call's (see
// sessionError): a handler's context ends with its session, and a call the
// handler made with it failed because the peer vanished.
func (cs *clientStream) ctxErr() error {
	err := cs.ctx.Err()
	if err == nil || cs.p.sess.Err() != nil {
		return nil
	}
	cs.abort()
	return grpcstatus.FromContextError(err).Err()
}

// SendMsg sends a request message. When the server has ended the call,
// or the call's context has ended, it returns io.EOF, and RecvMsg returns
// the call's status (Canceled or DeadlineExceeded for the context), as
// gRPC's SendMsg does: whether the context ended before SendMsg or while
// it waited on the stream, the answer is the same. A call that takes a
// single request (unary or server-streaming) is the exception: generated
// code returns that SendMsg's error as the call's, so once its context
// has ended it returns Canceled or DeadlineExceeded itself. That request
// goes out at once with the end of the requests, so that the response
// can come before CloseSend, which then does nothing.
func (cs *clientStream) SendMsg(m any) error {
	cs.smu.Lock()
	defer cs.smu.Unlock()
	if !cs.desc.ClientStreams && cs.sentMsg {
		return grpcstatus.Error(codes.Internal, "rpc: more than one request on a call that takes one")
	}
	if cs.sendClosed {
		return grpcstatus.Error(codes.Internal, "rpc: SendMsg after CloseSend")
	}
	if err := cs.ctxErr(); err != nil {
		if cs.desc.ClientStreams {
			return io.EOF
		}
		return err
	}
	b, err := appendRequest(cs.pending, m, cs.cfg.maxSend, cs.cfg.comp)
	if err != nil {
		cs.pending = b
		return err
	}
	n := len(b) - len(cs.pending) - partPrefixLen // the request's encoded size
	cs.sentMsg = true
	if !cs.desc.ClientStreams {
		// The call header, the request and the end part, in one frame.
		b = appendEmptyPart(b, partClientEnd)
		cs.pending, cs.sendClosed = nil, true
		_, err = cs.st.WriteLast(b) // a failure shows in RecvMsg
		if cs.cfg.stats() != nil && err == nil {
			cs.cfg.stats().outPayload(m, encodedSize(m, n, cs.cfg.comp), n)
		}
		return nil
	}
	_, err = cs.st.Write(b)
	cs.pending = b[:0]
	if err != nil {
		return io.EOF
	}
	if cs.cfg.stats() != nil {
		cs.cfg.stats().outPayload(m, encodedSize(m, n, cs.cfg.comp), n)
	}
	return nil
}

// CloseSend ends the request direction. It always returns nil: RecvMsg
// reports how the call ended.
func (cs *clientStream) CloseSend() error {
	cs.smu.Lock()
	defer cs.smu.Unlock()
	if cs.sendClosed {
		return nil
	}
	cs.sendClosed = true
	if cs.ctxErr() != nil {
		return nil
	}
	b := appendEmptyPart(cs.pending, partClientEnd)
	cs.pending = nil
	cs.st.WriteLast(b) // a failure shows in RecvMsg
	return nil
}

// RecvMsg receives the next response into m: io.EOF once the call ended
// with status OK, the call's error otherwise. Once the call's context has
// ended, a call not yet ended fails with Canceled or DeadlineExceeded,
// whatever the callee has answered meanwhile.
func (cs *clientStream) RecvMsg(m any) error {
	cs.rmu.Lock()
	defer cs.rmu.Unlock()
	if cs.done {
		return cs.err
	}
	if err := cs.ctxErr(); err != nil {
		return cs.finishLocked(err)
	}
	kind, payload, err := cs.nextLocked(false)
	if err != nil {
		return cs.finishLocked(err)
	}
	if kind != partMessage {
		return cs.finishLocked(grpcstatus.Errorf(codes.Internal, "rpc: unexpected part %d in a response", kind))
	}
	if err := decodeMessage(payload, m); err != nil {
		return cs.finishLocked(grpcstatus.Errorf(codes.Internal, "rpc: malformed response for %s: %v", cs.method, err))
	}
	if cs.cfg.stats() != nil {
		cs.cfg.stats().inPayload(m, len(payload), cs.r.wireLen())
	}
	cs.r.release() // a stream waiting for its next message holds no buffer
	if !cs.desc.ServerStreams {
		// One response only: the trailer follows and says how the call ended.
		kind, _, err := cs.nextLocked(false)
		if err == nil && kind == partMessage {
			err = grpcstatus.Error(codes.Internal, "rpc: more than one response on a call that returns one")
		}
		if err == io.EOF {
			cs.finishLocked(io.EOF)
			return nil
		}
		if err == nil {
			err = grpcstatus.Errorf(codes.Internal, "rpc: unexpected part %d in a response", kind)
		}
		return cs.finishLocked(err)
	}
	return nil
}

// nextLocked returns the next message or trailer part, taking the response
// header on the way, or, with toHeader, returning at it (as
// partResponseHeader, without its payload). A trailer ends the call: it
// returns io.EOF or the call's error.
func (cs *clientStream) nextLocked(toHeader bool) (byte, []byte, error) {
	if cs.hasPeeked {
		cs.hasPeeked = false
		return partMessage, cs.peeked, nil
	}
	for {
		kind, payload, err := cs.r.next()
		if err != nil {
			return 0, nil, cs.p.callError(cs.ctx, cs.aborted.Load(), err)
		}
		switch kind {
		case partResponseHeader:
			if err := misplacedHeader(cs.header != nil, cs.gotMsg); err != nil {
				return 0, nil, err
			}
			md, compression, err := parseResponseHeader(payload)
			if err != nil { // malformed: the call received no header
				return 0, nil, cs.p.callError(cs.ctx, cs.aborted.Load(), err)
			}
			cs.header = md
			if cs.r.decomp, err = callerDecompressor(compression); err != nil {
				return 0, nil, err
			}
			cs.headerDone = true
			if cs.cfg.stats() != nil {
				cs.cfg.stats().inHeader(md, len(payload), compression, false)
			}
			if toHeader {
				return partResponseHeader, nil, nil
			}
			continue
		case partTrailer:
			t, err := parseTrailer(payload)
			if err != nil {
				return 0, nil, cs.p.callError(cs.ctx, cs.aborted.Load(), err)
			}
			cs.trailer = t.md
			cs.headerDone = true
			if cs.cfg.stats() != nil {
				cs.cfg.stats().inTrailer(t.md, len(payload))
			}
			if t.code != codes.OK {
				return 0, nil, t.err()
			}
			if !cs.desc.ServerStreams && !cs.gotMsg {
				return 0, nil, errNoResponse()
			}
			return 0, nil, io.EOF
		case partMessage:
			if cs.cfg.stats() != nil && cs.header == nil && !cs.gotMsg {
				cs.cfg.stats().inHeader(nil, 0, "", true)
			}
			cs.gotMsg = true
		}
		cs.headerDone = true
		return kind, payload, nil
	}
}

// finishLocked ends the call with err (io.EOF for OK), frees its stream,
// and gives the call's Header and Trailer options what arrived.
func (cs *clientStream) finishLocked(err error) error {
	if cs.done {
		return cs.err
	}
	cs.done, cs.err = true, err
	if cs.stop != nil {
		cs.stop()
	}
	cs.st.Close()
	cs.r.release()
	cs.cfg.deliver(callMetadata{header: cs.header, trailer: cs.trailer})
	cs.release(err)
	return err
}

// Header waits for the response header and returns it. As in gRPC, it
// returns nil and no error when the call ended without one: RecvMsg then
// returns the call's status.
func (cs *clientStream) Header() (metadata.MD, error) {
	cs.rmu.Lock()
	defer cs.rmu.Unlock()
	if !cs.headerDone && !cs.done {
		cs.readHeaderLocked()
	}
	if cs.header == nil && cs.gotMsg {
		// The response began without header metadata, which a callee may
		// leave out: the header is empty, and the call goes on.
		return metadata.MD{}, nil
	}
	return cs.header, nil
}

// readHeaderLocked reads up to the response header, or to the first
// message or the trailer of a response without one, keeping a message for
// RecvMsg. A failure ends the call, for RecvMsg to report.
func (cs *clientStream) readHeaderLocked() {
	if err := cs.ctxErr(); err != nil {
		cs.finishLocked(err)
		return
	}
	kind, payload, err := cs.nextLocked(true)
	switch {
	case err != nil:
		cs.finishLocked(err)
	case kind == partMessage:
		cs.peeked, cs.hasPeeked = append([]byte(nil), payload...), true
	}
}

// Trailer returns the trailer metadata once RecvMsg has returned an error.
func (cs *clientStream) Trailer() metadata.MD {
	cs.rmu.Lock()
	defer cs.rmu.Unlock()
	return cs.trailer
}

var _ ClientConnInterface = (*Peer)(nil)
