package rpc

import (
	"context"
	"crypto/tls"
	"google.golang.org/grpc/encoding"
	"log/slog"
	"math"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/metadata"
)

// Defaults for message sizes, as in gRPC.
const (
	DefaultMaxRecvMsgSize = 4 << 20
	DefaultMaxSendMsgSize = 4 << 20
)

// A DialOption configures a Peer made by Dial or NewPeer.
type DialOption interface{ applyToPeer(*peerConfig) }

// A ServerOption configures a Server.
type ServerOption interface{ applyToServer(*serverConfig) }

// An Option configures both a Server and a Peer: a server's peers call too.
type Option interface {
	DialOption
	ServerOption
}

// peerConfig is what one side of a session needs to call and to be called.
type peerConfig struct {
	mux          mux.Config
	maxCalls     int
	tls          *tls.Config
	services     *Server
	unaryClient  []UnaryClientInterceptor
	streamClient []StreamClientInterceptor
	maxRecv      int
	maxSend      int
	maxHeader    int                                        // see MaxHeaderListSize; 0: the default
	maxIdle      time.Duration                              // see MaxConnectionIdle; 0: the mux config's
	client       clientParams                               // a Client's own options; see NewClient
	owner        *Client                                    // the Client the Peer is a session of, if any
	sessionMD    func(context.Context) (metadata.MD, error) // see WithSessionMetadataFunc
	logger       *slog.Logger                               // see WithLogger; nil: slog.Default()
	stats        statsConfig                                // see WithStatsHandler
}

type serverConfig struct {
	peer         peerConfig // for the peers the server accepts
	unaryServer  []UnaryServerInterceptor
	streamServer []StreamServerInterceptor
	onPeer       func(*Peer)
	maxAge       time.Duration   // see MaxConnectionAge; 0: never
	maxAgeGrace  time.Duration   // see MaxConnectionAgeGrace; 0: none
	auth         Authenticator   // see WithAuthenticator; nil admits every session
	duplicates   DuplicatePolicy // see DuplicateIdentities
}

func newPeerConfig() peerConfig {
	return peerConfig{maxRecv: DefaultMaxRecvMsgSize, maxSend: DefaultMaxSendMsgSize}
}

type bothOption func(*peerConfig)

func (f bothOption) applyToPeer(c *peerConfig)     { f(c) }
func (f bothOption) applyToServer(c *serverConfig) { f(&c.peer) }

type dialOption func(*peerConfig)

func (f dialOption) applyToPeer(c *peerConfig) { f(c) }

type serverOption func(*serverConfig)

func (f serverOption) applyToServer(c *serverConfig) { f(c) }

// MaxRecvMsgSize sets the largest message this side accepts, in requests it
// serves and responses it receives; larger ones fail the call with
// ResourceExhausted before any buffer is allocated. Default 4 MiB.
func MaxRecvMsgSize(n int) Option { return bothOption(func(c *peerConfig) { c.maxRecv = n }) }

// MaxSendMsgSize sets the largest message this side sends; larger ones fail
// the call with ResourceExhausted. Default 4 MiB.
func MaxSendMsgSize(n int) Option { return bothOption(func(c *peerConfig) { c.maxSend = n }) }

// MaxHeaderListSize sets the largest call header, response header or
// trailer this side accepts, in bytes as encoded, metadata and status
// included; larger ones fail the call with ResourceExhausted before any
// buffer is allocated. Default 1 MiB (gRPC-Go's default is 16 MiB); 0
// restores it.
func MaxHeaderListSize(n uint32) Option {
	return bothOption(func(c *peerConfig) { c.maxHeader = int(min(n, math.MaxInt32)) })
}

// MuxConfig sets the configuration of the sessions under the calls: the
// transport, windows, keepalive and limits. See mux.Config.
func MuxConfig(cfg *mux.Config) Option {
	return bothOption(func(c *peerConfig) {
		c.mux = mux.Config{}
		if cfg != nil {
			c.mux = *cfg
		}
	})
}

// MaxConcurrentCalls bounds the calls the other side may have in flight
// toward this one; further calls wait at the caller for a free slot. It
// sets mux.Config.MaxIncomingStreams, 1000 by default.
func MaxConcurrentCalls(n int) Option {
	return bothOption(func(c *peerConfig) { c.maxCalls = n })
}

// muxConfig returns the session configuration the options make: those
// that set a field of it win over MuxConfig, whatever their order.
func (c *peerConfig) muxConfig() *mux.Config {
	cfg := c.mux
	if c.maxCalls != 0 {
		cfg.MaxIncomingStreams = c.maxCalls
	}
	if c.maxIdle != 0 {
		cfg.IdleTimeout = c.maxIdle
	}
	return &cfg
}

// ChainUnaryClient adds interceptors for outgoing unary calls; the first
// is outermost.
func ChainUnaryClient(i ...UnaryClientInterceptor) Option {
	return bothOption(func(c *peerConfig) { c.unaryClient = append(c.unaryClient, i...) })
}

// ChainStreamClient adds interceptors for outgoing streaming calls; the
// first is outermost.
func ChainStreamClient(i ...StreamClientInterceptor) Option {
	return bothOption(func(c *peerConfig) { c.streamClient = append(c.streamClient, i...) })
}

// ChainUnaryServer adds interceptors for the unary calls a Server serves;
// the first is outermost.
func ChainUnaryServer(i ...UnaryServerInterceptor) ServerOption {
	return serverOption(func(c *serverConfig) { c.unaryServer = append(c.unaryServer, i...) })
}

// ChainStreamServer adds interceptors for the streaming calls a Server
// serves; the first is outermost.
func ChainStreamServer(i ...StreamServerInterceptor) ServerOption {
	return serverOption(func(c *serverConfig) { c.streamServer = append(c.streamServer, i...) })
}

// OnPeer sets a function the Server calls, in its own goroutine, for each
// peer that connects, so that it can call the peer outside any handler.
func OnPeer(f func(*Peer)) ServerOption {
	return serverOption(func(c *serverConfig) { c.onPeer = f })
}

// WithServices makes the dialing side serve srv's services (with srv's
// interceptors) to the other side of the session: callbacks.
func WithServices(srv *Server) DialOption {
	return dialOption(func(c *peerConfig) { c.services = srv })
}

// WithTLS makes Dial use TLS with cfg.
func WithTLS(cfg *tls.Config) DialOption {
	return dialOption(func(c *peerConfig) { c.tls = cfg })
}

// CallOption configures one call. This package's options are Header,
// Trailer, MaxCallRecvMsgSize, MaxCallSendMsgSize, CallPriority,
// UseCompressor, WaitForReady and StickyKey. gRPC-Go's grpc.CallOption values work too:
// each takes effect or fails the call with a clear error (see the list
// below, "gRPC's call options"). Any other value, an interceptor's own
// option say, does nothing to the call itself and reaches client
// interceptors unchanged.
//
// # gRPC's call options
//
//   - grpc.Header, grpc.Trailer, grpc.MaxCallRecvMsgSize and
//     grpc.MaxCallSendMsgSize act as this package's options of those
//     names; grpc.WaitForReady and grpc.FailFast as WaitForReady.
//   - grpc.Peer is filled with the session's addresses and TLS state when
//     the call ends, if the call reached a session.
//   - grpc.PerRPCCredentials adds the credentials' metadata to the call's
//     on every attempt; credentials that require transport security fail
//     the call with Unauthenticated on a session without TLS, as do the
//     credentials' own errors, as in gRPC.
//   - grpc.OnFinish is called once with the call's error when it ends: a
//     stream's when RecvMsg returns an error or its context ends.
//   - grpc.StaticMethod, grpc.MaxRetryRPCBufferSize and options that embed
//     grpc.EmptyCallOption ask nothing of the call (muxrpc keeps no retry
//     buffer: it sends a call again only if the other side never saw it).
//   - grpc.CallContentSubtype, grpc.ForceCodec, grpc.ForceCodecV2 and
//     grpc.CallCustomCodec are accepted for "proto", the one encoding of
//     muxrpc calls, and fail the call with Unimplemented otherwise.
//   - grpc.UseCompressor acts as UseCompressor.
//   - grpc.CallAuthority, and any option of package grpc not listed here,
//     fail the call with Unimplemented.
type CallOption any

// callConfig is what CallOptions set.
type callConfig struct {
	header   []*metadata.MD
	trailer  []*metadata.MD
	maxRecv  int
	maxSend  int
	priority mux.Priority
	comp     encoding.Compressor // the call's compressor; nil: none
	extra    *callExtras         // grpc.Peer, grpc.OnFinish, grpc.PerRPCCredentials, stats handlers; nil without
	err      error               // why the options fail the call before it is sent
}

type callOption func(*callConfig)

// Header stores the response header metadata of a call in *md when the
// call ends (for a stream, when RecvMsg returns an error, io.EOF
// included). It is stored whether the call failed or not, nil if no
// header arrived, so a variable reused across calls never holds an earlier
// call's. Each Header option of the call gets it.
func Header(md *metadata.MD) CallOption {
	return callOption(func(c *callConfig) { c.header = append(c.header, md) })
}

// Trailer stores the trailer metadata of a call in *md when the call ends,
// as Header does, nil if the call ended without a trailer or with one
// without metadata. Each Trailer option of the call gets it.
func Trailer(md *metadata.MD) CallOption {
	return callOption(func(c *callConfig) { c.trailer = append(c.trailer, md) })
}

// deliver gives the call's Header and Trailer options the metadata the
// call received.
func (c *callConfig) deliver(got callMetadata) {
	for _, h := range c.header {
		*h = got.header
	}
	for _, t := range c.trailer {
		*t = got.trailer
	}
}

// MaxCallRecvMsgSize sets the largest response message of one call.
func MaxCallRecvMsgSize(n int) CallOption {
	return callOption(func(c *callConfig) { c.maxRecv = n })
}

// MaxCallSendMsgSize sets the largest request message of one call.
func MaxCallSendMsgSize(n int) CallOption {
	return callOption(func(c *callConfig) { c.maxSend = n })
}

// CallPriority sends the call at priority p among the calls and streams
// of its session (see mux.Priority): while both wait to be sent, a call
// of higher priority goes first. The callee answers at the same priority,
// so a small call at PriorityHigh is not held up by bulk transfers in
// either direction. On the Smux transport it has no effect.
func CallPriority(p mux.Priority) CallOption {
	return callOption(func(c *callConfig) { c.priority = p })
}

// callConfig returns the configuration of a call with opts on sessions
// configured by pc.
func (pc *peerConfig) callConfig(opts []CallOption) callConfig {
	c := callConfig{maxRecv: pc.maxRecv, maxSend: pc.maxSend}
	if len(opts) == 0 {
		return c
	}
	return applyCallOptions(c, opts)
}

// startCall returns the configuration of a call of method (desc is nil
// for a unary one) with opts on sessions configured by pc, and the
// call's context: on a side with stats handlers, tagged by them, and the
// configuration reports the call to them.
func (pc *peerConfig) startCall(ctx context.Context, method string, desc *StreamDesc, opts []CallOption) (callConfig, context.Context) {
	c := pc.callConfig(opts)
	if len(pc.stats.calling) != 0 {
		c.extras().stats, ctx = startCallStats(ctx, pc.stats.calling, method, desc, opts)
	}
	return c, ctx
}

// applyCallOptions is apart from callConfig so that only calls with
// options pay for c escaping into the options' functions.
func applyCallOptions(c callConfig, opts []CallOption) callConfig {
	for _, o := range opts {
		switch o := o.(type) {
		case callOption:
			o(&c)
		case waitForReady, stickyKey:
			// Read where the call picks its session.
		default:
			grpcOption(&c, o)
		}
	}
	return c
}
