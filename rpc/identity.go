package rpc

import (
	"context"
	"crypto/tls"
	"net"

	"google.golang.org/grpc/metadata"
)

// An Identity is who the other side of a session is, as the Server's
// Authenticator established when the session began. It holds for every
// call of the session: handlers find it with IdentityFromContext, and the
// server's Directory files the peer under its Name.
type Identity struct {
	// Name identifies the peer to the application: an agent's id, a
	// device's serial number. The Directory looks peers up by it. Empty,
	// the peer is anonymous and not in the Directory.
	Name string
	// Info is whatever else the Authenticator established about the
	// peer (a tenant, roles, a token's claims), for handlers and
	// interceptors to use.
	Info any
}

// A SessionHello is what the dialing side of a session said about itself
// when the session began, as the Server's Authenticator sees it.
type SessionHello struct {
	// Metadata is the session metadata the client sent, from
	// WithSessionMetadata: credentials, an agent's id.
	Metadata metadata.MD
	// Services are the services the client serves, from WithServices:
	// the server may call them.
	Services []string
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
	// TLS is the connection's TLS state, with the client's certificates
	// if it sent any; nil on a connection without TLS.
	TLS *tls.ConnectionState
}

// An Authenticator decides whether a Server admits a session, before any
// call on it is served and before OnPeer runs, and says who the peer is.
// To refuse, it returns an error: a status error with code
// PermissionDenied or Unauthenticated says why (any other error refuses
// with Unauthenticated and its text); the client's Dial fails with that
// status. ctx ends when the session's handshake time is up
// (mux.Config.HandshakeTimeout, 10 s by default) or the session ends.
// A Server runs up to mux.Config.MaxPendingHandshakes authenticators at
// once (1024 by default); sessions beyond that wait their turn within
// their handshake time, so that a slow check delays no other session.
type Authenticator func(ctx context.Context, hello *SessionHello) (Identity, error)

// WithAuthenticator has the Server run auth on every session it serves
// before admitting it. Without one, a Server admits every session, with
// an anonymous Identity.
func WithAuthenticator(auth Authenticator) ServerOption {
	return serverOption(func(c *serverConfig) { c.auth = auth })
}

// WithSessionMetadata has the dialing side send md to the server once per
// session, when the session begins, for the server's Authenticator: an
// agent's id and a bearer token, say. Metadata follows the rules of a
// call's (lower-case keys, printable values unless the key ends in
// "-bin"). For credentials that change from one session to the next, use
// WithSessionMetadataFunc.
func WithSessionMetadata(md metadata.MD) DialOption {
	md = md.Copy()
	return WithSessionMetadataFunc(func(context.Context) (metadata.MD, error) { return md, nil })
}

// WithSessionMetadataFunc has the dialing side call f for the session
// metadata each time a session begins (a Client's reconnections
// included), so that a token is fresh on each. An error from f fails the
// session's dial with it.
func WithSessionMetadataFunc(f func(ctx context.Context) (metadata.MD, error)) DialOption {
	return dialOption(func(c *peerConfig) { c.sessionMD = f })
}

// IdentityFromContext returns the Identity of the peer whose call a
// handler serves, and false outside a handler. It is the Identity of
// PeerFromContext(ctx); for a call another protocol delivers (a gRPC
// call on a grpcport), the one Server.Authenticate established, and
// false if the Server has no Authenticator.
func IdentityFromContext(ctx context.Context) (Identity, bool) {
	if p := PeerFromContext(ctx); p != nil {
		return p.Identity(), true
	}
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
