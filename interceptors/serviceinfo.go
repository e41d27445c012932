package interceptors

import (
	"github.com/muxrpc/muxrpc/internal/grpcshape"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc"
)

// ServiceInfoProvider reports services the way a *grpc.Server does. It has
// the method set of grpc/reflection.ServiceInfoProvider, which the
// Prometheus provider's ServerMetrics.InitializeMetrics takes.
type ServiceInfoProvider interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
}

// ServiceInfo returns a ServiceInfoProvider that reports the services
// registered on srv, at the time GetServiceInfo is called, with grpc's
// types:
//
//	metrics := grpcprom.NewServerMetrics()
//	srv := rpc.NewServer(interceptors.UnaryServer(metrics.UnaryServerInterceptor()))
//	pb.RegisterGreeterServer(srv, impl)
//	metrics.InitializeMetrics(interceptors.ServiceInfo(srv))
func ServiceInfo(srv *rpc.Server) ServiceInfoProvider { return serviceInfo{srv} }

type serviceInfo struct{ srv *rpc.Server }

func (s serviceInfo) GetServiceInfo() map[string]grpc.ServiceInfo {
	return grpcshape.ServiceInfo(s.srv)
}
