package grpcport

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"time"
)

// The prefaces the port tells apart, and how many bytes it reads to do so.
const (
	muxrpcPreface = "MUXRPC\x00"                       // the native transport's (PROTOCOL.md, section 1.1), without its version
	http2Preface  = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" // RFC 9113, section 3.4
	sniffLen      = 8
)

// protocol is what a connection's first bytes say it speaks.
type protocol int

const (
	unknown        protocol = iota // not enough bytes yet
	muxrpcProtocol                 // muxrpc, or bytes that only muxrpc may still make sense of
	http2Protocol
	http1Protocol
	tlsProtocol // a TLS record on a port without TLS
)

// classify says what b, a connection's first bytes, speaks, or unknown if
// more bytes could change the answer. full says no more bytes will come
// (sniffLen of them have, or the connection ended).
func classify(b []byte, full bool) protocol {
	if len(b) == 0 {
		return unknown
	}
	if b[0] == 0x16 { // a TLS handshake record
		return tlsProtocol
	}
	h2 := isPrefix(b, http2Preface)
	mux := isPrefix(b, muxrpcPreface) || len(b) > len(muxrpcPreface) && string(b[:len(muxrpcPreface)]) == muxrpcPreface
	h1, h1Done := requestLine(b)
	switch {
	case h2 && (full || len(b) >= sniffLen):
		return http2Protocol
	case mux && (full || len(b) >= sniffLen):
		return muxrpcProtocol
	case h1Done && !h2:
		return http1Protocol
	case !h2 && !mux && !h1:
		return muxrpcProtocol // an smux frame, or garbage muxrpc rejects
	case full:
		return muxrpcProtocol
	}
	return unknown
}

// isPrefix reports whether b is a prefix of s, without allocating.
func isPrefix(b []byte, s string) bool { return len(b) <= len(s) && string(b) == s[:len(b)] }

// requestLine reports whether b may begin an HTTP/1 request line (a
// method: upper-case letters), and whether it does (the method and its
// space have come).
func requestLine(b []byte) (may, does bool) {
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
		case c == ' ' && i > 0:
			return true, true
		default:
			return false, false
		}
	}
	return true, false
}

// route finds out what conn speaks and hands it to that protocol's server,
// or answers and closes it.
func (s *Server) route(conn net.Conn) {
	deadline := time.Now().Add(s.handshakeTimeout)
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return
	}
	if s.tls != nil {
		s.routeTLS(conn, deadline)
		return
	}
	proto, conn, err := sniff(conn)
	if err != nil {
		conn.Close()
		return
	}
	switch proto {
	case http2Protocol:
		s.handOver(conn, s.grpcConns)
	case muxrpcProtocol:
		s.handOver(conn, s.muxConns)
	case http1Protocol:
		refuseHTTP1(conn)
	default: // TLS on a plaintext port, or too few bytes
		conn.Close()
	}
}

// routeTLS does the TLS handshake and routes by the protocol negotiated
// with ALPN.
func (s *Server) routeTLS(conn net.Conn, deadline time.Time) {
	tc := tls.Server(conn, s.tls)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		s.handOver(tc, s.grpcConns)
		return
	}
	s.handOver(tc, s.muxConns)
}

// handOver gives conn to the server of q, without the port's deadline.
func (s *Server) handOver(conn net.Conn, q *connQueue) {
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return
	}
	q.deliver(conn)
}

// http1Response is what a connection that begins like HTTP/1.1 gets.
var http1Response = []byte("HTTP/1.1 400 Bad Request\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Connection: close\r\n" +
	"Content-Length: " + strconv.Itoa(len(http1Body)) + "\r\n" +
	"\r\n" + http1Body)

const http1Body = "this port serves muxrpc and gRPC (HTTP/2), not HTTP/1.1 requests\n"

// refuseHTTP1 answers an HTTP/1 request with http1Response and closes the
// connection. It reads what came of the request first, and after
// half-closing, so that the close does not reset the connection before
// the client has read the answer.
func refuseHTTP1(conn net.Conn) {
	defer conn.Close()
	var discard [512]byte
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	conn.Read(discard[:])
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write(http1Response); err != nil {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		for {
			if _, err := conn.Read(discard[:]); err != nil {
				return
			}
		}
	}
}
