package integration

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// gRPC's logger in these tests.
//
// gRPC-Go's interop functions (package google.golang.org/grpc/interop)
// report a failed check through grpclog's Fatal, whose logger then lets
// grpclog call os.Exit(1): one failed check would end the whole test
// binary, with no test named. caseLogger, which TestMain installs before
// anything uses gRPC (grpclog.SetLoggerV2 must come first), turns it into
// a test failure instead: Fatal, Fatalf and Fatalln record the message on
// the test of the interop case running (t.Error) and end the calling
// goroutine with t.FailNow, whose runtime.Goexit runs the goroutine's
// deferred calls and never returns, so that grpclog never reaches
// os.Exit. (A bare runtime.Goexit would not do: the testing package takes
// a test goroutine that exits without FailNow or SkipNow for a panic.)
// The interop functions check only in the goroutine that calls them, the
// test's own, which FailNow requires; the server side
// (interop.NewTestServer) returns errors and never calls Fatal.
//
// Error goes to the running case's t.Log; Info and Warning are dropped,
// as V reports no verbosity. Outside an interop case (between them, or in
// the other tests of this package, whose etcd client uses gRPC), Error
// goes to standard error, and Fatal does what gRPC's default logger does:
// it prints the message and the process exits.

// currentCase is the interop case iteration running, whose test gRPC's
// log goes to; nil between them.
var currentCase atomic.Pointer[caseLog]

// caseLog is the test of one interop case iteration while it runs. Its
// lock keeps a goroutine of gRPC's or muxrpc's from logging on the test
// after it ended, which the testing package forbids.
type caseLog struct {
	t     *testing.T
	mu    sync.RWMutex
	ended bool
}

// logTo makes gRPC's log go to t until the function it returns is
// called; the caller defers it, so that it also runs when a Fatal ends
// t's goroutine. Cases run one at a time.
func logTo(t *testing.T) (end func()) {
	t.Helper()
	c := &caseLog{t: t}
	if !currentCase.CompareAndSwap(nil, c) {
		t.Fatal("another interop case is running: they must run one at a time")
	}
	return func() {
		currentCase.CompareAndSwap(c, nil)
		c.mu.Lock()
		c.ended = true
		c.mu.Unlock()
	}
}

// toCase calls f with the test of the case running, if one is, and
// returns that test; nil if none is.
func toCase(f func(t *testing.T)) *testing.T {
	c := currentCase.Load()
	if c == nil {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ended {
		return nil
	}
	f(c.t)
	return c.t
}

// caseLogger is the grpclog.LoggerV2 of the tests; see above.
type caseLogger struct{}

func (caseLogger) Info(args ...any)                    {}
func (caseLogger) Infoln(args ...any)                  {}
func (caseLogger) Infof(format string, args ...any)    {}
func (caseLogger) Warning(args ...any)                 {}
func (caseLogger) Warningln(args ...any)               {}
func (caseLogger) Warningf(format string, args ...any) {}
func (caseLogger) V(l int) bool                        { return false }

func (caseLogger) Error(args ...any)                 { logError(fmt.Sprint(args...)) }
func (caseLogger) Errorln(args ...any)               { logError(fmt.Sprintln(args...)) }
func (caseLogger) Errorf(format string, args ...any) { logError(fmt.Sprintf(format, args...)) }

func (caseLogger) Fatal(args ...any)                 { fatal(fmt.Sprint(args...)) }
func (caseLogger) Fatalln(args ...any)               { fatal(fmt.Sprintln(args...)) }
func (caseLogger) Fatalf(format string, args ...any) { fatal(fmt.Sprintf(format, args...)) }

func logError(msg string) {
	msg = strings.TrimSuffix(msg, "\n")
	if toCase(func(t *testing.T) { t.Log("grpclog ERROR: " + msg) }) == nil {
		fmt.Fprintln(os.Stderr, "grpclog ERROR: "+msg)
	}
}

// fatal fails the running case with msg and ends the calling goroutine,
// its test's; with no case running it ends the process, as grpclog's
// default logger does.
func fatal(msg string) {
	msg = strings.TrimSuffix(msg, "\n")
	t := toCase(func(t *testing.T) { t.Error("grpclog FATAL: " + msg) })
	if t == nil {
		fmt.Fprintln(os.Stderr, "grpclog FATAL: "+msg)
		os.Exit(1)
	}
	t.FailNow()
}
