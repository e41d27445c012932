package main

import (
	"strings"
	"testing"
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
	if run(strings.NewReader(in), &out) {
		t.Error("run reported success for a run with a failing package")
	}
	want := "   running a\nok a (1.2s)\n   running b\nFAIL b (2.0s)\n    y_test.go:9: boom\nFAIL\n   running c\n-- c (no tests)\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	if run(strings.NewReader("# x\nx.go:1: syntax error\n"), &out) || !strings.Contains(out.String(), "syntax error") {
		t.Errorf("a build failure: %q", out.String())
	}
	out.Reset()
	build := `{"ImportPath":"d [d.test]","Action":"build-output","Output":"./x_test.go:3:27: undefined: f\n"}
{"ImportPath":"d [d.test]","Action":"build-fail"}
{"Action":"start","Package":"d"}
{"Action":"output","Package":"d","Output":"FAIL\td [build failed]\n"}
{"Action":"fail","Package":"d","Elapsed":0}
`
	if run(strings.NewReader(build), &out) || !strings.Contains(out.String(), "undefined: f") || !strings.Contains(out.String(), "[build failed]") {
		t.Errorf("a package that does not build: %q", out.String())
	}
	out.Reset()
	if !run(strings.NewReader(`{"Action":"start","Package":"a"}`+"\n"+`{"Action":"pass","Package":"a","Elapsed":1}`+"\n"), &out) {
		t.Errorf("a passing run reported failure: %q", out.String())
	}
}
