package rpc

import "context"

// A HealthCheck watches the health of the server on the other side of a
// session that a Client holds. The Client runs it once the session is up,
// with a context that ends with the session or when the Client no longer
// needs it, and balances calls over the session only while the latest
// report said serving; until the first report the session takes no calls.
// It returns when ctx ends, or with an error when the watch fails; the
// Client then runs it again after a backoff, counting the session as not
// serving meanwhile. Package rpc/health provides one for the standard
// grpc.health.v1.Health service.
type HealthCheck func(ctx context.Context, p *Peer, report func(serving bool)) error
