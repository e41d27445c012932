// Command testprogress prints the progress of `go test -json`: which
// package starts, and how each ends, so that a long run is never silent;
// for a package that fails, its own output and that of its failed tests
// (a test that panics or times out has not ended: the package's output
// has the panic). test.sh pipes its tests
// through it:
//
//	go test -race -json ./... | go run ./internal/testprogress
//
// It exits with status 1 if a package failed or the stream held output
// that is not JSON (a build error, say, which it prints), and 0
// otherwise.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
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
	if !run(os.Stdin, os.Stdout) {
		os.Exit(1)
	}
}

// run reads the events on in and reports on out; it returns whether
// every package passed.
func run(in io.Reader, out io.Writer) bool {
	ok := true
	output := map[string]*strings.Builder{} // each package's output and its failed tests', printed if it fails
	tests := map[string]*strings.Builder{}  // each running test's output, by package and test
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			fmt.Fprintf(out, "%s\n", line) // not an event: a build failure's text, say
			if !strings.HasPrefix(string(line), "ok ") {
				ok = false
			}
			continue
		}
		if e.Test != "" {
			key := e.Package + " " + e.Test
			switch e.Action {
			case "output":
				buf(tests, key).WriteString(e.Output)
			case "fail":
				buf(output, e.Package).WriteString(buf(tests, key).String())
				delete(tests, key)
			case "pass", "skip":
				delete(tests, key)
			}
			continue
		}
		switch e.Action {
		case "build-output": // a package that does not build: its compiler's messages
			fmt.Fprint(out, e.Output)
		case "build-fail":
			ok = false
		case "start":
			fmt.Fprintf(out, "   running %s\n", e.Package)
		case "output":
			buf(output, e.Package).WriteString(e.Output)
		case "pass":
			fmt.Fprintf(out, "ok %s (%.1fs)\n", e.Package, e.Elapsed)
			delete(output, e.Package)
		case "skip":
			fmt.Fprintf(out, "-- %s (no tests)\n", e.Package)
			delete(output, e.Package)
		case "fail":
			ok = false
			fmt.Fprintf(out, "FAIL %s (%.1fs)\n%s", e.Package, e.Elapsed, buf(output, e.Package))
			delete(output, e.Package)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testprogress: reading the events: %v\n", err)
		return false
	}
	return ok
}

func buf(m map[string]*strings.Builder, pkg string) *strings.Builder {
	b := m[pkg]
	if b == nil {
		b = new(strings.Builder)
		m[pkg] = b
	}
	return b
}
