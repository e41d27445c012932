package main

import (
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRun feeds the events of a run with a passing, a failing and a
// test-less package, and a build failure's text, and checks the report.
func TestRun(t *testing.T) {
	in := `{"Action":"start","Package":"a"}
{"Action":"run","Package":"a","Test":"TestX"}
{"Action":"output","Package":"a","Test":"TestX","Output":"=== RUN TestX\n"}
{"Action":"output","Package":"b","Test":"TestOK","Output":"=== RUN TestOK, whose output a failing package's report leaves out\n"}
{"Action":"pass","Package":"b","Test":"TestOK"}
{"Action":"pass","Package":"a","Test":"TestX","Elapsed":0.1}
{"Action":"pass","Package":"a","Elapsed":1.25}
{"Action":"start","Package":"b"}
{"Action":"output","Package":"b","Test":"TestY","Output":"    y_test.go:9: boom\n"}
{"Action":"fail","Package":"b","Test":"TestY"}
{"Action":"output","Package":"b","Output":"FAIL\n"}
{"Action":"fail","Package":"b","Elapsed":2}
{"Action":"start","Package":"c"}
{"Action":"skip","Package":"c","Elapsed":0}
`
	var out strings.Builder
	if run(strings.NewReader(in), &out, time.Hour) {
		t.Error("run reported success for a run with a failing package")
	}
	want := "   running a\nok a (1.2s)\n   running b\nFAIL b (2.0s)\n    y_test.go:9: boom\nFAIL\n   running c\n-- c (no tests)\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	if run(strings.NewReader("# x\nx.go:1: syntax error\n"), &out, time.Hour) || !strings.Contains(out.String(), "syntax error") {
		t.Errorf("a build failure: %q", out.String())
	}
	out.Reset()
	build := `{"ImportPath":"d [d.test]","Action":"build-output","Output":"./x_test.go:3:27: undefined: f\n"}
{"ImportPath":"d [d.test]","Action":"build-fail"}
{"Action":"start","Package":"d"}
{"Action":"output","Package":"d","Output":"FAIL\td [build failed]\n"}
{"Action":"fail","Package":"d","Elapsed":0}
`
	if run(strings.NewReader(build), &out, time.Hour) || !strings.Contains(out.String(), "undefined: f") || !strings.Contains(out.String(), "[build failed]") {
		t.Errorf("a package that does not build: %q", out.String())
	}
	out.Reset()
	if !run(strings.NewReader(`{"Action":"start","Package":"a"}`+"\n"+`{"Action":"pass","Package":"a","Elapsed":1}`+"\n"), &out, time.Hour) {
		t.Errorf("a passing run reported failure: %q", out.String())
	}
	out.Reset()
	// A cold module cache: the go command says what it downloads.
	cold := "go: downloading storj.io/drpc v1.0.0\n" + `{"Action":"start","Package":"a"}` + "\n" + `{"Action":"pass","Package":"a","Elapsed":1}` + "\n"
	if !run(strings.NewReader(cold), &out, time.Hour) || !strings.Contains(out.String(), "go: downloading storj.io/drpc") {
		t.Errorf("a passing run that downloaded modules: %q", out.String())
	}
}

// TestSaysWhatIsGoingOn: when the events stop for a while, run says that
// the go command is compiling before any package runs, and which package
// is still running once one is.
func TestSaysWhatIsGoingOn(t *testing.T) {
	in, feed := io.Pipe()
	out := &syncBuilder{}
	done := make(chan bool)
	go func() { done <- run(in, out, 20*time.Millisecond) }()
	waitFor(t, out, "   ... compiling (")
	io.WriteString(feed, `{"Action":"start","Package":"example.com/slow"}`+"\n")
	waitFor(t, out, "   ... still running example.com/slow (")
	io.WriteString(feed, `{"Action":"pass","Package":"example.com/slow","Elapsed":1}`+"\n")
	feed.Close()
	if !<-done {
		t.Errorf("a passing run reported failure: %q", out.String())
	}
}

// waitFor waits until out holds want, for 10 s at most.
func waitFor(t *testing.T, out *syncBuilder, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in %q", want, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuilder is a strings.Builder safe for one writer and one reader.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
