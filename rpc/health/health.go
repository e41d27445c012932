package health

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/health/healthv1"
	"google.golang.org/grpc/codes"
	grpchealth "google.golang.org/grpc/health"
	"google.golang.org/grpc/status"
)

// Server is gRPC-Go's health server, google.golang.org/grpc/health's:
// SetServingStatus sets the status of a service ("" for the server as a
// whole, SERVING from the start), Shutdown makes every status NOT_SERVING
// and ignores further changes until Resume. Its methods take the
// healthv1 types, which are grpc_health_v1's. One Server may be registered
// on several rpc.Servers (and on a grpc.Server) at once.
type Server = grpchealth.Server

// NewServer returns a Server in which the server as a whole is SERVING
// and no service has a status yet.
func NewServer() *Server { return grpchealth.NewServer() }

// Register registers hs as the grpc.health.v1.Health service of r, an
// *rpc.Server. Like any registration, it must come before r serves; it
// panics if hs is nil.
func Register(r rpc.ServiceRegistrar, hs *Server) {
	if hs == nil {
		panic("health: Register with a nil *Server")
	}
	healthv1.RegisterHealthServer(r, service{hs})
}

// service serves a Server through the generated interface. Check and List
// have the same signatures in gRPC and here; Watch's stream has the method
// set of gRPC's, so the handler's stream is passed on as it is.
type service struct{ *Server }

var _ healthv1.HealthServer = service{}

// Watch streams the status of a service as it changes.
func (s service) Watch(in *healthv1.HealthCheckRequest, stream rpc.ServerStreamingServer[healthv1.HealthCheckResponse]) error {
	return s.Server.Watch(in, stream)
}

// ErrWatchEnded is returned by a Check whose Watch the server ended
// without an error, which a health server does not do while it serves.
var ErrWatchEnded = errors.New("health: the server ended the watch")

// Check returns an rpc.HealthCheck that watches service ("" for the server
// as a whole) on the other side of a session: it opens a Watch and reports
// serving for each SERVING status it receives, and not serving for any
// other (NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN). It returns nil when ctx
// ends, and an error when the watch fails otherwise: the session ending,
// the server stopping, or [ErrWatchEnded].
//
// When the server has no health service (it answers the Watch
// Unimplemented), the check does as gRPC-Go's client-side health checking
// does: it reports serving once and waits for ctx to end, returning nil
// then, or an error if the session ends first.
func Check(service string) rpc.HealthCheck {
	return func(ctx context.Context, p *rpc.Peer, report func(serving bool)) error {
		err := watch(ctx, p, service, report)
		switch {
		case ctx.Err() != nil:
			return nil
		case status.Code(err) == codes.Unimplemented:
			report(true)
			select {
			case <-ctx.Done():
				return nil
			case <-p.Done():
				return fmt.Errorf("health: the session ended: %w", sessionErr(p))
			}
		}
		return fmt.Errorf("health: watching %q: %w", service, err)
	}
}

// watch reports each status the Watch of service receives until the Watch
// fails, and returns why.
func watch(ctx context.Context, p *rpc.Peer, service string, report func(serving bool)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call whatever its state
	stream, err := healthv1.NewHealthClient(p).Watch(ctx, &healthv1.HealthCheckRequest{Service: service})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ErrWatchEnded
		}
		if err != nil {
			return err
		}
		report(resp.GetStatus() == healthv1.HealthCheckResponse_SERVING)
	}
}

// sessionErr is why p's session ended, never nil.
func sessionErr(p *rpc.Peer) error {
	if err := p.Err(); err != nil {
		return err
	}
	return errors.New("closed")
}
