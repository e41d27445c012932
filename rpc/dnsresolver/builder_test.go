package dnsresolver

import (
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/resolver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recordingCC is a resolver.ClientConn that records the states it gets.
type recordingCC struct {
	resolver.ClientConn // nil: calling anything else panics
	states              []resolver.State
	errs                []error
}

func (c *recordingCC) UpdateState(s resolver.State) error {
	c.states = append(c.states, s)
	return nil
}

func (c *recordingCC) ReportError(err error) { c.errs = append(c.errs, err) }

func TestScheme(t *testing.T) {
	if got := NewBuilder().Scheme(); got != "dns" {
		t.Fatalf("Scheme() = %q, want dns", got)
	}
}

// An IP literal is its own address, given before Build returns, with no
// goroutine left behind.
func TestBuildIPLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"dns:///10.0.0.1:8080":  "10.0.0.1:8080",
		"dns:///10.0.0.1":       "10.0.0.1:443",
		"dns:///[::1]:8080":     "[::1]:8080",
		"dns:///2001:db8::1":    "[2001:db8::1]:443",
		"dns://8.8.8.8/[::1]:1": "[::1]:1",
	} {
		cc := &recordingCC{}
		r, err := NewBuilder().Build(mustTarget(t, in), cc, resolver.BuildOptions{})
		if err != nil {
			t.Fatalf("Build(%q): %v", in, err)
		}
		r.ResolveNow(resolver.ResolveNowOptions{})
		r.Close()
		if len(cc.states) != 1 || len(cc.states[0].Addresses) != 1 || cc.states[0].Addresses[0].Addr != want || len(cc.errs) != 0 {
			t.Errorf("Build(%q): states %v, errors %v; want one state with %s", in, cc.states, cc.errs, want)
		}
	}
}

func TestBuildError(t *testing.T) {
	cc := &recordingCC{}
	if r, err := NewBuilder().Build(mustTarget(t, "dns:///example.com:http"), cc, resolver.BuildOptions{}); err == nil {
		r.Close()
		t.Fatal("Build with a bad port: no error")
	}
	if len(cc.states)+len(cc.errs) != 0 {
		t.Fatalf("a failed Build called the ClientConn: %v %v", cc.states, cc.errs)
	}
}
