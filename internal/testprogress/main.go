// Command testprogress prints the progress of `go test -json`: which
// package starts, and how each ends; for a package that fails, its own
// output and that of its failed tests (a test that panics or times out
// has not ended: the package's output has the panic). So that a long run
// is never silent, after 20 s without a line it says what is going on:
// compiling (before any package runs, or between them), or which
// packages are still running and for how long. test.sh pipes its tests
// through it:
//
//	go test -race -json ./... 2>&1 | go run ./internal/testprogress
//
// It exits with status 1 if a package failed or the stream held output
// that is not JSON (a build error, say, which it prints), apart from the
// go command's "go: downloading" lines, and 0 otherwise.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // of build-output and build-fail events
	Test       string
	Elapsed    float64
	Output     string
}

func main() {
	if !run(os.Stdin, os.Stdout, 20*time.Second) {
		os.Exit(1)
	}
}

// run reads the events on in and reports on out, saying what is going on
// whenever it has printed nothing for quiet; it returns whether every
// package passed.
func run(in io.Reader, out io.Writer, quiet time.Duration) bool {
	lines := make(chan []byte)
	var readErr error
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			lines <- bytes.Clone(sc.Bytes())
		}
		readErr = sc.Err()
	}()
	r := &report{out: out, output: map[string]*strings.Builder{}, tests: map[string]*strings.Builder{},
		running: map[string]time.Time{}, began: time.Now(), ok: true}
	silent := time.NewTimer(quiet)
	defer silent.Stop()
	for {
		select {
		case line, more := <-lines:
			if !more {
				if readErr != nil {
					fmt.Fprintf(out, "testprogress: reading the events: %v\n", readErr)
					return false
				}
				return r.ok
			}
			if r.take(line) {
				silent.Reset(quiet)
			}
		case <-silent.C:
			r.sayWhatIsGoingOn()
			silent.Reset(quiet)
		}
	}
}

// A report is what run has learnt from the events so far.
type report struct {
	out     io.Writer
	output  map[string]*strings.Builder // each package's output and its failed tests', printed if it fails
	tests   map[string]*strings.Builder // each running test's output, by package and test
	running map[string]time.Time        // the packages running, and when each started
	began   time.Time
	ok      bool
}

// sayWhatIsGoingOn prints which packages are running and for how long,
// or that the go command is compiling when none is.
func (r *report) sayWhatIsGoingOn() {
	if len(r.running) == 0 {
		fmt.Fprintf(r.out, "   ... compiling (%s since the start)\n", since(r.began))
		return
	}
	var pkgs []string
	for pkg, start := range r.running {
		pkgs = append(pkgs, fmt.Sprintf("%s (%s)", pkg, since(start)))
	}
	slices.Sort(pkgs)
	fmt.Fprintf(r.out, "   ... still running %s\n", strings.Join(pkgs, ", "))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Second) }

// take takes one line of the stream, and reports whether it printed.
func (r *report) take(line []byte) (printed bool) {
	var e event
	if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
		fmt.Fprintf(r.out, "%s\n", line) // not an event: a build failure's text, say
		if !strings.HasPrefix(string(line), "ok ") && !strings.HasPrefix(string(line), "go: downloading ") {
			r.ok = false
		}
		return true
	}
	if e.Test != "" {
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			buf(r.tests, key).WriteString(e.Output)
		case "fail":
			buf(r.output, e.Package).WriteString(buf(r.tests, key).String())
			delete(r.tests, key)
		case "pass", "skip":
			delete(r.tests, key)
		}
		return false
	}
	switch e.Action {
	case "build-output": // a package that does not build: its compiler's messages
		fmt.Fprint(r.out, e.Output)
		return true
	case "build-fail":
		r.ok = false
		return false
	case "start":
		r.running[e.Package] = time.Now()
		fmt.Fprintf(r.out, "   running %s\n", e.Package)
		return true
	case "output":
		buf(r.output, e.Package).WriteString(e.Output)
		return false
	case "pass":
		fmt.Fprintf(r.out, "ok %s (%.1fs)\n", e.Package, e.Elapsed)
	case "skip":
		fmt.Fprintf(r.out, "-- %s (no tests)\n", e.Package)
	case "fail":
		r.ok = false
		fmt.Fprintf(r.out, "FAIL %s (%.1fs)\n%s", e.Package, e.Elapsed, buf(r.output, e.Package))
	default:
		return false
	}
	// The package ended.
	delete(r.output, e.Package)
	delete(r.running, e.Package)
	return true
}

func buf(m map[string]*strings.Builder, pkg string) *strings.Builder {
	b := m[pkg]
	if b == nil {
		b = new(strings.Builder)
		m[pkg] = b
	}
	return b
}
