package rpc

import (
	"context"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Stats handlers: gRPC-Go's stats.Handler, called as gRPC-Go calls it, so
// that what is built on it (OpenTelemetry's otelgrpc, OpenCensus, the
// grpc/stats/opentelemetry plugin, a program's own metrics) works on
// muxrpc sessions and calls unchanged.
//
// Per session, on both of its sides: TagConn, then ConnBegin when the
// session starts and ConnEnd when it ends. The context TagConn returns is
// the base of the contexts of the handlers serving the session's calls.
//
// Per call, on the calling side (Client true): TagRPC, before the call's
// outgoing metadata is read, so that a handler may add to it (otelgrpc
// injects the trace context there); Begin; then for each attempt on a
// session OutHeader, an OutPayload per request, InHeader (when the
// response begins, with its header, possibly empty), an InPayload per
// response and InTrailer (when the trailer arrives); End, once, when the
// call ends. A call a Client or a Directory moves to another session is
// one call: one TagRPC, one Begin, one End.
//
// Per call, on the serving side: TagRPC, on the handler's context with
// the incoming metadata and deadline in it, and the handler (with its
// interceptors) runs in the context TagRPC returned; InHeader; Begin;
// an InPayload per request as the handler reads it; OutHeader when the
// response header goes out (with the first response or the trailer, or
// at SendHeader); an OutPayload per response; OutTrailer; End, with the
// call's status. A call of an unknown method gets TagRPC, InHeader and
// OutTrailer only, as in gRPC.
//
// Payload sizes are the encoded message's (Length), its payload as it
// went on the wire, compressed if the call is (CompressedLength, Length
// otherwise), and its part's, the 5-byte prefix included (WireLength);
// header and trailer WireLengths are their parts' too, and the headers
// name the call's compressor (Compression). A side without handlers pays a length check per
// call and per session, nothing more.

// WithStatsHandler adds a stats handler, as gRPC's grpc.WithStatsHandler
// and grpc.StatsHandler do: given to NewServer it sees the calls the
// Server serves and the calls its handlers and OnPeer make back to the
// clients (as calls of the client side, Client true), and the sessions;
// given to Dial, NewPeer or NewClient, the calls the Peer or Client makes,
// the calls it serves for the services of WithServices, and the sessions.
// The handlers of a Server given to WithServices do not apply there: the
// dialing side's do. Several handlers may be given, with this option and
// WithRoleStatsHandlers; each is called, in the order given, for every
// event it sees, and each's TagRPC and TagConn get the context the
// previous one returned. A nil handler is ignored.
//
// A handler written for one role, as gRPC's servers only serve and its
// clients only call, mistakes the other role's calls for its own:
// OpenTelemetry's otelgrpc.NewServerHandler would start server spans for
// the calls a server makes back to its clients. Give such handlers with
// WithRoleStatsHandlers.
func WithStatsHandler(h stats.Handler) Option {
	return WithRoleStatsHandlers(h, h)
}

// WithRoleStatsHandlers adds a stats handler for each role of this side
// of its sessions: client sees the calls this side makes, server the
// calls it serves, and both see the sessions (once if they are the same
// handler). Either may be nil. With otelgrpc, on a server or a dialing
// side alike:
//
//	rpc.WithRoleStatsHandlers(otelgrpc.NewClientHandler(), otelgrpc.NewServerHandler())
//
// See WithStatsHandler for the rest.
func WithRoleStatsHandlers(client, server stats.Handler) Option {
	return bothOption(func(c *peerConfig) {
		c.stats = c.stats.with(client, server)
	})
}

// statsConfig is the stats handlers of a side of a session, by what they
// see: the calls it makes, the calls it serves, and its sessions.
type statsConfig struct {
	calling, serving, conns []stats.Handler
}

// with returns c with the handlers client and server added, copying the
// slices it extends so that configurations never share an array.
func (c statsConfig) with(client, server stats.Handler) statsConfig {
	add := func(hs []stats.Handler, h stats.Handler) []stats.Handler {
		if h == nil {
			return hs
		}
		return append(hs[:len(hs):len(hs)], h)
	}
	c.calling = add(c.calling, client)
	c.serving = add(c.serving, server)
	c.conns = add(c.conns, client)
	if server != client {
		c.conns = add(c.conns, server)
	}
	return c
}

// statsConn tags the session's connection and reports its beginning to
// the handlers hs, and its end once the session ends. It returns the
// connection's context, derived from ctx.
func (p *Peer) statsConn(ctx context.Context, hs []stats.Handler) context.Context {
	info := &stats.ConnTagInfo{RemoteAddr: p.info.Addr, LocalAddr: p.info.LocalAddr}
	for _, h := range hs {
		ctx = h.TagConn(ctx, info)
	}
	client := p.sess.IsClient()
	begin := &stats.ConnBegin{Client: client}
	for _, h := range hs {
		h.HandleConn(ctx, begin)
	}
	p.sess.AfterFunc(func() {
		end := &stats.ConnEnd{Client: client}
		for _, h := range hs {
			h.HandleConn(ctx, end)
		}
	})
	return ctx
}

// callStats reports one outgoing call to its stats handlers. Calls
// without handlers carry a nil one.
type callStats struct {
	hs    []stats.Handler
	ctx   context.Context // what TagRPC returned
	begin time.Time

	mu      sync.Mutex  // the stream's RecvMsg and its context's end may race to End
	trailer metadata.MD // the last trailer received, for End
}

// startCallStats tags an outgoing call of method for the handlers hs and
// reports its Begin: desc is nil for a unary call. It returns the call's
// reporter and the context the call goes on with.
func startCallStats(ctx context.Context, hs []stats.Handler, method string, desc *StreamDesc, opts []CallOption) (*callStats, context.Context) {
	failFast := !waitsForReady(opts)
	info := &stats.RPCTagInfo{FullMethodName: method, FailFast: failFast}
	for _, h := range hs {
		ctx = h.TagRPC(ctx, info)
	}
	s := &callStats{hs: hs, ctx: ctx, begin: time.Now()}
	b := &stats.Begin{Client: true, BeginTime: s.begin, FailFast: failFast}
	if desc != nil {
		b.IsClientStream, b.IsServerStream = desc.ClientStreams, desc.ServerStreams
	}
	s.handle(b)
	return s, ctx
}

// stats returns the call's reporter, nil without stats handlers.
func (c *callConfig) stats() *callStats {
	if c.extra == nil {
		return nil
	}
	return c.extra.stats
}

func (s *callStats) handle(ev stats.RPCStats) {
	for _, h := range s.hs {
		h.HandleRPC(s.ctx, ev)
	}
}

// outHeader reports the call header of an attempt on p, sent with md and
// the name of the call's compressor.
func (s *callStats) outHeader(p *Peer, method string, md metadata.MD, compression string) {
	if md == nil {
		md = metadata.MD{}
	}
	s.handle(&stats.OutHeader{Client: true, Compression: compression, FullMethod: method, RemoteAddr: p.info.Addr, LocalAddr: p.info.LocalAddr, Header: md})
}

// outPayload reports a request m sent, n bytes encoded, wire bytes of
// payload on the wire (n, or less once compressed).
func (s *callStats) outPayload(m any, n, wire int) {
	s.handle(&stats.OutPayload{Client: true, Payload: m, Length: n, CompressedLength: wire, WireLength: wire + partPrefixLen, SentTime: time.Now()})
}

// inHeader reports the response header md, a part of n bytes of payload
// naming the callee's compressor, or, with implicit, a response that
// began without one.
func (s *callStats) inHeader(md metadata.MD, n int, compression string, implicit bool) {
	md, wire := md.Copy(), n+partPrefixLen // the handlers' own, as in gRPC
	if implicit {
		wire = 0
	}
	s.handle(&stats.InHeader{Client: true, Compression: compression, Header: md, WireLength: wire})
}

// inPayload reports a response m received, n bytes encoded, wire bytes
// of payload on the wire (n, or less when it came compressed).
func (s *callStats) inPayload(m any, n, wire int) {
	s.handle(&stats.InPayload{Client: true, Payload: m, Length: n, CompressedLength: wire, WireLength: wire + partPrefixLen, RecvTime: time.Now()})
}

// inTrailer reports the trailer's metadata md, a part of n bytes of
// payload.
func (s *callStats) inTrailer(md metadata.MD, n int) {
	md = md.Copy() // the handlers' own, as in gRPC
	s.mu.Lock()
	s.trailer = md
	s.mu.Unlock()
	s.handle(&stats.InTrailer{Client: true, Trailer: md, WireLength: n + partPrefixLen})
}

// end reports the end of the call with err: nil or io.EOF for OK.
func (s *callStats) end(err error) {
	if err == io.EOF {
		err = nil
	}
	s.mu.Lock()
	t := s.trailer
	s.mu.Unlock()
	s.handle(&stats.End{Client: true, BeginTime: s.begin, EndTime: time.Now(), Trailer: t, Error: err})
}

// serverStats reports one call being served to the stats handlers of its
// Peer. Calls served without handlers carry a nil one.
type serverStats struct {
	hs    []stats.Handler
	ctx   context.Context // what TagRPC returned
	begin time.Time
	began bool           // Begin was reported: the method is known
	ended *status.Status // the status the call ended with; guarded by the call's mu
	// trailerReported, when the deadline ended the call, is closed once
	// its trailer has been reported, which End waits for; guarded by the
	// call's mu.
	trailerReported chan struct{}

	compression string // the call's compressor's name, "" for none
	requestWire int    // the payload bytes a unary request came in
}

// startStats tags the call c of method, whose call header arrived as a
// part of n bytes of payload with the metadata md, for the handlers hs,
// and reports InHeader and, for a known method, Begin. It returns the
// context the handler runs in, derived from ctx.
func (c *serverCall) startStats(ctx context.Context, hs []stats.Handler, method string, md metadata.MD, n int) context.Context {
	info := &stats.RPCTagInfo{FullMethodName: method}
	for _, h := range hs {
		ctx = h.TagRPC(ctx, info)
	}
	sc := &statsCtx{Context: ctx, s: serverStats{hs: hs, ctx: ctx}}
	s := &sc.s
	md = md.Copy() // the handlers' own, as in gRPC: the handler's is in ctx
	p := &c.peer.info
	s.compression = compressorName(c.compressor())
	s.handle(&stats.InHeader{Compression: s.compression, FullMethod: method, RemoteAddr: p.Addr, LocalAddr: p.LocalAddr, Header: md, WireLength: n + partPrefixLen})
	if c.m != nil {
		s.began, s.begin = true, time.Now()
		b := &stats.Begin{BeginTime: s.begin}
		if sd := c.m.stream; sd != nil {
			b.IsClientStream, b.IsServerStream = sd.ClientStreams, sd.ServerStreams
		}
		s.handle(b)
	}
	return sc
}

// statsCtx is the context of a call served with stats handlers: what
// TagRPC returned, with the call's reporter, so that serverCall needs no
// field for it and calls without handlers carry nothing.
type statsCtx struct {
	context.Context
	s serverStats
}

// stats returns the call's reporter, nil without stats handlers: a
// type check of the call's context.
func (c *serverCall) stats() *serverStats {
	if sc, ok := c.ctx.(*statsCtx); ok {
		return &sc.s
	}
	return nil
}

func (s *serverStats) handle(ev stats.RPCStats) {
	for _, h := range s.hs {
		h.HandleRPC(s.ctx, ev)
	}
}

// endStats reports the End of a call whose Begin was reported, with the
// status it ended with, once its handler has returned.
func (c *serverCall) endStats() {
	s := c.stats()
	if !s.began {
		return
	}
	c.mu.Lock()
	st, reported := s.ended, s.trailerReported
	c.mu.Unlock()
	if reported != nil {
		<-reported // bounded: the trailer's write has trailerGrace
	}
	s.handle(&stats.End{BeginTime: s.begin, EndTime: time.Now(), Error: st.Err()})
}

// statsSent is what one write of a served call carried, for its stats
// handlers: the response header (header true), a response of n bytes
// (msg non-nil) and the trailer (trailer true).
type statsSent struct {
	header    bool
	headerMD  metadata.MD
	trailer   bool
	trailerMD metadata.MD
	msg       any
	n         int // the message's encoded size
	wire      int // the message's payload on the wire: n, or less once compressed
}

// sending notes what the coming write carries: the response header if
// it is due (always with a message; with the trailer only if it has
// metadata, else the response is trailers-only, as in gRPC), and the
// trailer. The caller holds c.mu, before appendPendingHeader.
func (c *serverCall) sending(withMsg, withTrailer bool) statsSent {
	var w statsSent
	if !c.headerSent && (withMsg || len(c.header) > 0) {
		w.header, w.headerMD = true, c.header
		if w.headerMD == nil {
			w.headerMD = metadata.MD{}
		}
	}
	if withTrailer {
		w.trailer, w.trailerMD = true, c.trailer
	}
	return w
}

// sent reports a write that carried w, once it succeeded.
func (s *serverStats) sent(w statsSent) {
	if w.header {
		s.handle(&stats.OutHeader{Compression: s.compression, Header: w.headerMD})
	}
	if w.msg != nil {
		s.handle(&stats.OutPayload{Payload: w.msg, Length: w.n, CompressedLength: w.wire, WireLength: w.wire + partPrefixLen, SentTime: time.Now()})
	}
	if w.trailer {
		s.handle(&stats.OutTrailer{Trailer: w.trailerMD})
	}
}

// received reports a request m the handler read, n bytes encoded, wire
// bytes of payload on the wire (n, or less when it came compressed).
func (s *serverStats) received(m any, n, wire int) {
	s.handle(&stats.InPayload{Payload: m, Length: n, CompressedLength: wire, WireLength: wire + partPrefixLen, RecvTime: time.Now()})
}

// encodedSize returns the encoded size of m, a message whose payload on
// the wire was wire bytes: those, unless comp compressed them.
func encodedSize(m any, wire int, comp encoding.Compressor) int {
	if comp == nil {
		return wire
	}
	if pm, ok := protoMessage(m); ok {
		return proto.Size(pm)
	}
	return wire
}
