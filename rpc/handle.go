package rpc

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// serverCall is one call being served. It is the handler's context, so
// that the call's state costs no context.WithValue, and it is the
// ServerStream of streaming calls.
type serverCall struct {
	ctx    context.Context
	peer   *Peer
	st     *mux.Stream
	m      *method
	cancel context.CancelFunc

	// rmu serializes the reading of the caller's parts (RecvMsg, the
	// unary request's decoding) with the end of the call, which returns
	// r's buffer to the pool: a goroutine the handler left in RecvMsg
	// must not read into a buffer that another call has taken since. It
	// guards the fields down to mu.
	rmu         sync.Mutex
	r           partReader
	request     []byte  // the unary request; aliases requestBox's buffer
	requestBox  *[]byte // the pooled buffer the request was read into, taken from r
	recvErr     error   // why RecvMsg can read no further
	clientEnded bool    // the caller's end part arrived
	over        bool    // the call has ended: nothing more is read

	headerSent bool       // guarded by mu, and placed here to save padding
	ended      bool       // the trailer is out; guarded by mu
	expiring   bool       // expire ended the call and ends its stream; guarded by mu
	mu         sync.Mutex // guards what SetHeader and friends touch
	header     metadata.MD
	trailer    metadata.MD
}

type callKey struct{}

// Value returns the call itself for callKey, so SetHeader and friends find
// it; other keys go to the parent context.
func (c *serverCall) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.ctx.Value(key)
}

// Deadline returns the caller's deadline, if it sent one.
func (c *serverCall) Deadline() (time.Time, bool) { return c.ctx.Deadline() }

// Done is closed when the call is cancelled, by the caller or its deadline.
func (c *serverCall) Done() <-chan struct{} { return c.ctx.Done() }

// Err says why Done is closed.
func (c *serverCall) Err() error { return c.ctx.Err() }

// Context returns the call's context: the call itself.
func (c *serverCall) Context() context.Context { return c }

func callFromContext(ctx context.Context) *serverCall {
	c, _ := ctx.Value(callKey{}).(*serverCall)
	return c
}

// handle serves the call on st, from its call header to its trailer.
func (p *Peer) handle(st *mux.Stream) {
	if !p.begin() {
		st.Reset(mux.ResetRefused)
		return
	}
	defer p.end()
	cfg := &p.cfg
	if p.srv != nil {
		cfg = &p.srv.cfg.peer
	}
	c := &serverCall{peer: p, st: st, r: partReader{st: st, maxMsg: cfg.maxRecv, maxHeader: cfg.maxHeader}}
	defer c.finish()
	kind, payload, err := c.r.next()
	if err != nil || kind != partCallHeader {
		c.ctx = p.ctx
		c.fail(headerStatus(kind, err))
		return
	}
	h, err := parseCallHeader(payload)
	if err != nil {
		c.ctx = p.ctx
		s, ok := status.FromError(err) // too many entries
		if !ok {
			s = status.New(codes.InvalidArgument, err.Error())
		}
		c.fail(s)
		return
	}
	if h.priority != mux.PriorityNormal {
		c.st.SetPriority(h.priority) // answer at the caller's priority
	}
	if p.srv != nil {
		c.m = p.srv.lookup(h.method)
	}
	if len(h.compression) != 0 {
		var refused *status.Status
		if c.r.decomp, refused = calleeCompressor(h.compression); refused != nil {
			c.ctx = p.ctx
			c.fail(refused)
			return
		}
	}
	ctx := p.ctx
	if h.md != nil {
		ctx = metadata.NewIncomingContext(ctx, h.md)
	}
	if h.timeout > 0 {
		ctx, c.cancel = context.WithDeadline(ctx, time.Now().Add(h.timeout))
	} else {
		ctx, c.cancel = context.WithCancel(ctx)
	}
	defer c.cancel()
	if len(p.cfg.stats.serving) != 0 {
		ctx = c.startStats(ctx, p.cfg.stats.serving, string(h.method), h.md, len(payload))
		defer c.endStats()
	}
	c.ctx = ctx
	if c.m == nil {
		msg := "this peer serves no services"
		if p.srv != nil {
			msg = p.srv.unknownMethod(string(h.method))
		}
		c.fail(status.New(codes.Unimplemented, msg))
		return
	}
	if h.timeout > 0 {
		stop := context.AfterFunc(ctx, c.expire) // the deadline's own timer, no second one
		defer stop()
	}
	st.OnAbort(c.cancel) // the caller reset its stream, or the session ended: the handler's context ends
	defer func() {
		if r := recover(); r != nil {
			c.fail(c.panicked(r)) // logs r; see logging.go
		}
	}()
	if c.m.unary != nil {
		c.serveUnary()
	} else {
		c.serveStream()
	}
}

func (c *serverCall) serveUnary() {
	kind, payload, err := c.r.next()
	if err != nil {
		c.fail(c.readStatus(err))
		return
	}
	if kind != partMessage {
		c.fail(status.New(codes.InvalidArgument, "unary call without a request message"))
		return
	}
	// The request keeps its buffer, whatever parts follow it.
	c.request, c.requestBox = payload, c.r.take()
	if c.stats() != nil {
		c.stats().requestWire = c.r.wireLen()
	}
	if kind, _, err = c.r.next(); err != nil || kind != partClientEnd {
		c.fail(afterRequestStatus(c, "unary", kind, err))
		return
	}
	c.endOfRequests()
	resp, err := c.m.unary.Handler(c.m.svc.impl, c, c.decodeRequest, c.peer.srv.unaryInt)
	if err == nil {
		err = c.overdue()
	}
	if err != nil {
		c.fail(handlerStatus(err))
		return
	}
	if isNilMessage(resp) {
		c.fail(status.Newf(codes.Internal, "rpc: handler for %s returned a nil response and no error", c.m.fullName))
		return
	}
	out, err := newOutMessage(resp)
	if err != nil {
		c.fail(status.Convert(err))
		return
	}
	c.mu.Lock()
	if c.ended { // at its deadline, say
		c.mu.Unlock()
		return
	}
	// One buffer of the right size for the whole write, so that the
	// message is encoded once into it and never moved.
	bp := getBuf(c.pendingHeaderLen() + out.partLen() + partPrefixLen + metadataLen(c.trailer))
	defer putBuf(bp)
	var sent statsSent
	if c.stats() != nil {
		sent = c.sending(true, true)
	}
	b := c.appendPendingHeader((*bp)[:0])
	mark := len(b)
	b, err = out.appendPart(b, c.peer.srv.cfg.peer.maxSend, c.compressor())
	sent.wire = len(b) - mark - partPrefixLen
	if err != nil {
		c.mu.Unlock()
		*bp = b
		c.fail(status.Convert(err))
		return
	}
	b = appendTrailer(b, &trailer{md: c.trailer})
	c.ended = true
	c.mu.Unlock()
	*bp = b
	if _, err := c.st.WriteLast(b); err == nil && c.stats() != nil {
		sent.msg, sent.n = resp, out.size
		c.stats().sent(sent)
	}
}

// decodeRequest decodes the unary request into m, for the method's
// handler.
func (c *serverCall) decodeRequest(m any) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.over {
		return errReadAfterEnd
	}
	if err := c.decode(c.request, m); err != nil {
		return err
	}
	if c.stats() != nil {
		c.stats().received(m, len(c.request), c.stats().requestWire)
	}
	return nil
}

// decode decodes a request of the call into m: an undecodable request is
// INTERNAL, as in gRPC.
func (c *serverCall) decode(p []byte, m any) error {
	if err := decodeMessage(p, m); err != nil {
		return status.Errorf(codes.Internal, "malformed request for %s: %v", c.m.fullName, err)
	}
	return nil
}

// errReadAfterEnd is the error of reading requests once the call has
// ended.
var errReadAfterEnd = status.Error(codes.Canceled, "rpc: request read after the call ended")

// overdue returns context.DeadlineExceeded once the call's deadline has
// passed: the call has ended for the caller by then, so a handler that
// succeeds too late fails it all the same.
func (c *serverCall) overdue() error {
	if err := c.Err(); err == context.DeadlineExceeded {
		return err
	}
	return nil
}

// finish ends the call's stream, then the reading of the caller's parts:
// a RecvMsg blocked on the stream wakes with an error, and later ones
// fail at once. Only then does the reader's buffer go back to the pool.
// A call that expire ended is left to expire to end its stream, as the
// write of its trailer turns out: a close here could end the stream with
// END, cutting a part short, where expire resets it.
func (c *serverCall) finish() {
	c.mu.Lock()
	expiring := c.expiring
	c.mu.Unlock()
	if !expiring {
		c.st.Close()
	}
	c.rmu.Lock()
	c.over = true
	c.request = nil
	if c.requestBox != nil {
		putBuf(c.requestBox)
		c.requestBox = nil
	}
	c.r.release()
	c.rmu.Unlock()
}

// trailerGrace bounds how long a call past its deadline waits to write
// its trailer while the caller's window is full; then it resets the
// stream instead.
const trailerGrace = 100 * time.Millisecond

// expire ends the call when its deadline has passed, whatever its handler
// is doing (PROTOCOL.md, section 16): the trailer with DEADLINE_EXCEEDED,
// then the stream is closed, which resets the caller's direction if it is
// still open and fails the handler's SendMsg and RecvMsg. When the
// trailer cannot be written within trailerGrace, the caller not reading,
// the stream is reset with code DEADLINE_EXCEEDED instead. It runs on a
// goroutine of its own once the call's context has ended.
func (c *serverCall) expire() {
	if c.Err() != context.DeadlineExceeded {
		return // cancelled: the caller or the session has gone, or the call ended
	}
	c.st.SetWriteDeadline(time.Now().Add(trailerGrace))
	switch err := c.end(status.FromContextError(context.DeadlineExceeded), true); {
	case err == errCallEnded:
		// The handler's trailer is out or on its way; handle closes.
	case err != nil:
		c.st.Reset(resetDeadlineExceeded)
	default:
		c.st.Close()
	}
}

func (c *serverCall) serveStream() {
	sd := c.m.stream
	var err error
	if si := c.peer.srv.streamInt; si != nil {
		info := &StreamServerInfo{FullMethod: c.m.fullName, IsClientStream: sd.ClientStreams, IsServerStream: sd.ServerStreams}
		err = si(c.m.svc.impl, c, info, sd.Handler)
	} else {
		err = sd.Handler(c.m.svc.impl, c)
	}
	if err == nil {
		err = c.overdue()
	}
	c.fail(handlerStatus(err))
}

// endOfRequests notes the caller's end part. That the caller gives up
// later shows through the stream's OnAbort.
func (c *serverCall) endOfRequests() {
	c.clientEnded = true
}

// headerStatus says what is wrong with the first part of a call: reading
// it failed with err, or it is not a call header.
func headerStatus(kind byte, err error) *status.Status {
	var tooLarge *errTooLarge
	switch {
	case errors.As(err, &tooLarge):
		return status.New(codes.ResourceExhausted, tooLarge.Error())
	case err == io.EOF:
		return status.New(codes.InvalidArgument, "call ended before its call header")
	case err != nil:
		return status.New(codes.InvalidArgument, "reading the call header: "+err.Error())
	}
	return status.Newf(codes.InvalidArgument, "call did not start with a call header (its first part is of kind %d)", kind)
}

// afterRequestStatus says what is wrong with what followed the single
// request of a unary or server-streaming call, where the end part belongs:
// reading it failed with err, or it is a part of that kind.
func afterRequestStatus(c *serverCall, what string, kind byte, err error) *status.Status {
	switch {
	case err != nil:
		return c.readStatus(err)
	case kind == partMessage:
		return status.Newf(codes.InvalidArgument, "%s call with more than one request message", what)
	}
	return status.Newf(codes.InvalidArgument, "%s call with a part of kind %d where its end part belongs", what, kind)
}

// readStatus turns an error reading the caller's parts into a status.
func (c *serverCall) readStatus(err error) *status.Status {
	var tooLarge *errTooLarge
	var withStatus interface{ GRPCStatus() *status.Status }
	switch {
	case errors.As(err, &tooLarge):
		return status.New(codes.ResourceExhausted, tooLarge.Error())
	case errors.As(err, &withStatus): // a message that does not decompress
		return withStatus.GRPCStatus()
	case c.Err() != nil:
		return status.FromContextError(c.Err())
	case err == io.EOF:
		return status.New(codes.InvalidArgument, "call ended without its end part")
	case errors.Is(err, errMalformed):
		return status.New(codes.InvalidArgument, err.Error())
	}
	return status.New(codes.Canceled, "call aborted by the caller: "+err.Error())
}

// errCallEnded is what fail returns when the call had ended already.
var errCallEnded = errors.New("rpc: the call has ended")

// fail ends the call with s, unless it has ended: the pending header,
// then the trailer, in one write that also ends the stream. It returns
// the write's error, or errCallEnded.
func (c *serverCall) fail(s *status.Status) error { return c.end(s, false) }

// end is fail; byExpire also leaves the stream to expire to end (see
// finish), in the same step that claims the end of the call.
func (c *serverCall) end(s *status.Status, byExpire bool) error {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return errCallEnded
	}
	bp := getBuf(0)
	defer putBuf(bp)
	c.ended, c.expiring = true, byExpire
	var sent statsSent
	var reported chan struct{}
	if c.stats() != nil {
		c.stats().ended, sent = s, c.sending(false, true)
		if byExpire { // from the deadline's goroutine: End waits for this trailer's report
			reported = make(chan struct{})
			c.stats().trailerReported = reported
		}
	}
	b := c.appendPendingHeader((*bp)[:0])
	b = appendTrailer(b, statusTrailer(s, c.trailer))
	c.mu.Unlock()
	*bp = b
	_, err := c.st.WriteLast(b)
	if err == nil && c.stats() != nil {
		c.stats().sent(sent)
	}
	if reported != nil {
		close(reported)
	}
	return err
}

// pendingHeaderLen returns the length of what appendPendingHeader would
// append. The caller holds c.mu.
func (c *serverCall) pendingHeaderLen() int {
	if c.headerSent || len(c.header) == 0 && c.compressor() == nil {
		return 0
	}
	return partPrefixLen + metadataLen(c.header) + 1 + protowire.SizeBytes(len(compressorName(c.compressor())))
}

// appendPendingHeader appends the response header if it is due and not
// yet sent: with the header metadata, and with the compressor of the
// answers, which the caller must know before their first message. The
// caller holds c.mu.
func (c *serverCall) appendPendingHeader(b []byte) []byte {
	if !c.headerSent {
		c.headerSent = true
		if len(c.header) > 0 || c.compressor() != nil {
			b = appendResponseHeader(b, c.header, compressorName(c.compressor()))
		}
	}
	return b
}

// compressor returns the call's compressor, nil for none: the caller's,
// which its requests come in and its answers go out with. It is set
// before the handler runs and never changes, so it needs no lock.
func (c *serverCall) compressor() encoding.Compressor { return c.r.decomp }

// SetHeader adds header metadata, sent with the first message, the
// trailer, or SendHeader. Empty metadata is nothing to add, even once the
// header is out; metadata that breaks the rules of keys and values
// (PROTOCOL.md, section 14) fails with Internal, as in gRPC.
func (c *serverCall) SetHeader(md metadata.MD) error {
	if md.Len() == 0 {
		return nil
	}
	if err := checkMetadata(md); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.headerSent {
		return status.Error(codes.Internal, "rpc: SetHeader after the header was sent")
	}
	c.header = metadata.Join(c.header, md)
	return nil
}

// SendHeader sends the header metadata, with md added, now.
func (c *serverCall) SendHeader(md metadata.MD) error {
	if err := checkMetadata(md); err != nil {
		return err
	}
	c.mu.Lock()
	if c.headerSent {
		c.mu.Unlock()
		return status.Error(codes.Internal, "rpc: SendHeader after the header was sent")
	}
	c.header = metadata.Join(c.header, md)
	c.headerSent = true
	header := c.header
	b := appendResponseHeader(nil, header, compressorName(c.compressor()))
	c.mu.Unlock()
	if _, err := c.st.Write(b); err != nil {
		return c.sendError(err)
	}
	if c.stats() != nil {
		c.stats().sent(statsSent{header: true, headerMD: header})
	}
	return nil
}

// SetTrailer adds trailer metadata, sent when the call ends. Metadata
// that breaks the rules of keys and values is left out whole; the
// package's SetTrailer reports it.
func (c *serverCall) SetTrailer(md metadata.MD) { c.setTrailer(md) }

func (c *serverCall) setTrailer(md metadata.MD) error {
	if md.Len() == 0 {
		return nil
	}
	if err := checkMetadata(md); err != nil {
		return err
	}
	c.mu.Lock()
	c.trailer = metadata.Join(c.trailer, md)
	c.mu.Unlock()
	return nil
}

// SendMsg sends one response message, waiting while the caller's window is
// full.
func (c *serverCall) SendMsg(m any) error {
	out, err := newOutMessage(m)
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		if err := c.Err(); err != nil {
			return status.FromContextError(err).Err() // DeadlineExceeded, say
		}
		return status.Error(codes.Internal, "rpc: SendMsg after the call ended")
	}
	bp := getBuf(c.pendingHeaderLen() + out.partLen())
	defer putBuf(bp)
	var sent statsSent
	if c.stats() != nil && err == nil {
		sent = c.sending(true, false)
	}
	b := c.appendPendingHeader((*bp)[:0])
	c.mu.Unlock()
	if err != nil {
		return err
	}
	mark := len(b)
	b, err = out.appendPart(b, c.peer.srv.cfg.peer.maxSend, c.compressor())
	*bp = b
	if err != nil {
		return err
	}
	sent.wire = len(b) - mark - partPrefixLen
	if _, err := c.st.Write(b); err != nil {
		return c.sendError(err)
	}
	if c.stats() != nil {
		sent.msg, sent.n = m, out.size
		c.stats().sent(sent)
	}
	return nil
}

func (c *serverCall) sendError(err error) error {
	if ctxErr := c.Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	return status.Error(codes.Canceled, "call aborted by the caller: "+err.Error())
}

// RecvMsg receives the caller's next message into m, or io.EOF once the
// caller has ended its direction. Once the call has ended it fails
// without reading.
func (c *serverCall) RecvMsg(m any) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	switch {
	case c.clientEnded:
		return io.EOF
	case c.recvErr != nil:
		return c.recvErr
	case c.over:
		return errReadAfterEnd
	}
	kind, payload, err := c.r.next()
	if err != nil {
		return c.recvFailed(c.readStatus(err))
	}
	switch kind {
	case partClientEnd:
		if !c.m.stream.ClientStreams {
			// Where the single request belongs (PROTOCOL.md, section 13).
			return c.recvFailed(status.New(codes.InvalidArgument, "server-streaming call without a request message"))
		}
		c.endOfRequests()
		return io.EOF
	case partMessage:
	default:
		return c.recvFailed(status.Newf(codes.InvalidArgument, "unexpected part %d from the caller", kind))
	}
	if err := c.decode(payload, m); err != nil {
		return err
	}
	if c.stats() != nil {
		c.stats().received(m, len(payload), c.r.wireLen())
	}
	c.r.release() // a handler waiting for the next message holds no buffer
	if !c.m.stream.ClientStreams {
		// One request only: its end part follows in the same write.
		if kind, _, err := c.r.next(); err != nil || kind != partClientEnd {
			return c.recvFailed(afterRequestStatus(c, "server-streaming", kind, err))
		}
		c.endOfRequests()
	}
	return nil
}

// recvFailed ends the call with s, for the caller's parts can no longer
// be read in order: the caller has gone, broken the protocol, or sent a
// part over the size limit. The trailer goes first, then the stream is
// closed, which resets the caller's direction, whose rest was not read
// (PROTOCOL.md, section 13): so the caller learns s. RecvMsg returns s
// from then on, and the handler's context is cancelled. A call that has
// ended already keeps its stream as it is: expire, which may have claimed
// the end of the call and not yet written its trailer, ends the stream
// itself (see finish). The caller holds c.rmu.
func (c *serverCall) recvFailed(s *status.Status) error {
	c.recvErr = s.Err()
	if c.fail(s) != errCallEnded {
		c.st.Close()
	}
	c.cancel()
	return c.recvErr
}

// SetHeader sets header metadata of the call that ctx belongs to, sent
// with its first response message, its trailer or SendHeader.
func SetHeader(ctx context.Context, md metadata.MD) error {
	c := callFromContext(ctx)
	if c == nil {
		if ts := transportStreamFromContext(ctx); ts != nil {
			return ts.SetHeader(md)
		}
		return status.Error(codes.Internal, "rpc: SetHeader outside a handler")
	}
	return c.SetHeader(md)
}

// SendHeader sends the header metadata of the call that ctx belongs to.
func SendHeader(ctx context.Context, md metadata.MD) error {
	c := callFromContext(ctx)
	if c == nil {
		if ts := transportStreamFromContext(ctx); ts != nil {
			return ts.SendHeader(md)
		}
		return status.Error(codes.Internal, "rpc: SendHeader outside a handler")
	}
	return c.SendHeader(md)
}

// SetTrailer sets trailer metadata of the call that ctx belongs to.
func SetTrailer(ctx context.Context, md metadata.MD) error {
	c := callFromContext(ctx)
	if c == nil {
		if ts := transportStreamFromContext(ctx); ts != nil {
			return ts.SetTrailer(md)
		}
		return status.Error(codes.Internal, "rpc: SetTrailer outside a handler")
	}
	return c.setTrailer(md)
}

// Method returns the full method name of the call that ctx belongs to.
func Method(ctx context.Context) (string, bool) {
	c := callFromContext(ctx)
	if c == nil {
		if ts := transportStreamFromContext(ctx); ts != nil {
			return ts.Method(), true
		}
		return "", false
	}
	if c.m == nil {
		return "", false
	}
	return c.m.fullName, true
}

// statusTrailer builds the trailer that carries s.
func statusTrailer(s *status.Status, md metadata.MD) *trailer {
	t := &trailer{code: s.Code(), message: s.Message(), md: md}
	if s.Code() != codes.OK {
		for _, d := range s.Proto().GetDetails() {
			if len(t.details) == maxStatusDetails {
				break
			}
			if b, err := proto.Marshal(d); err == nil {
				t.details = append(t.details, b)
			}
		}
	}
	return t
}

var _ ServerStream = (*serverCall)(nil)
