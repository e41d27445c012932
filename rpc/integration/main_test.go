package integration

import (
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/grpclog"
)

// TestMain installs the gRPC logger of the tests before anything uses
// gRPC (see caseLogger: gRPC's interop functions fail through
// grpclog's Fatal, which would otherwise end the process), then runs
// the tests, failing them if goroutines outlive them.
func TestMain(m *testing.M) {
	grpclog.SetLoggerV2(caseLogger{})
	goleak.VerifyTestMain(m)
}
