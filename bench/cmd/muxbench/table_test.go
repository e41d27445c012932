package main

import (
	"strings"
	"testing"
	"time"
)

// TestRatioAboveOneMeansNativeIsBetter checks the orientation of the ratio
// columns for a metric where higher is better and one where lower is.
func TestRatioAboveOneMeansNativeIsBetter(t *testing.T) {
	faster := summary{median: 200, ok: true}
	slower := summary{median: 100, ok: true}
	for _, c := range []struct {
		name          string
		m             metric
		native, other summary
		want          string
	}{
		{"higher is better, native higher", metric{higher: true}, faster, slower, "2.00"},
		{"higher is better, native lower", metric{higher: true}, slower, faster, "0.50"},
		{"lower is better, native lower", metric{}, slower, faster, "2.00"},
		{"lower is better, native higher", metric{}, faster, slower, "0.50"},
		{"equal", metric{}, faster, faster, "1.00"},
		{"other not measured", metric{}, faster, summary{}, "n/a"},
		{"native costs nothing", metric{}, summary{ok: true}, faster, "∞"},
	} {
		if got := ratio(c.m, c.native, c.other); got != c.want {
			t.Errorf("%s: ratio %s, want %s", c.name, got, c.want)
		}
	}
}

// TestSummarizeTakesTheMedianAndRange checks a summary over odd and even
// numbers of reps.
func TestSummarizeTakesTheMedianAndRange(t *testing.T) {
	ops := metric{value: func(s sample) float64 { return float64(s.Ops) }}
	samples := func(ops ...int64) []sample {
		var ss []sample
		for _, o := range ops {
			ss = append(ss, sample{Ops: o})
		}
		return ss
	}
	if got := summarize(samples(5, 1, 3), ops); got != (summary{median: 3, min: 1, max: 5, ok: true}) {
		t.Errorf("odd: %+v", got)
	}
	if got := summarize(samples(4, 1, 2, 3), ops); got != (summary{median: 2.5, min: 1, max: 4, ok: true}) {
		t.Errorf("even: %+v", got)
	}
	if got := summarize(nil, ops); got.ok {
		t.Errorf("no samples: %+v", got)
	}
}

// TestOptionalMetricNotMeasuredIsNA checks that an optional metric a
// framework cannot measure (W8's urgent calls on gRPC-Go) shows n/a, not
// a zero and a zero ratio.
func TestOptionalMetricNotMeasuredIsNA(t *testing.T) {
	w8, err := workloadNamed("W8")
	if err != nil {
		t.Fatal(err)
	}
	grpc, _ := frameworkNamed("grpc")
	native, _ := frameworkNamed("muxrpc-native")
	r := results{}
	r.add(w8, grpc, sample{P50: time.Millisecond, P99: time.Millisecond, LoadedP50: time.Millisecond, LoadedP99: time.Millisecond})
	r.add(w8, native, sample{P50: time.Millisecond, P99: time.Millisecond, LoadedP50: time.Millisecond, LoadedP99: time.Millisecond, UrgentP50: time.Millisecond, UrgentP99: time.Millisecond})
	var out strings.Builder
	writeTable(&out, r, []*workload{w8}, []*framework{grpc, native}, func(w *workload) []metric { return w.metrics })
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "urgent loaded p99") {
			cells := strings.Split(line, "|")
			if got := strings.TrimSpace(cells[3]); got != "n/a" {
				t.Errorf("gRPC-Go's urgent p99 cell is %q, want n/a: %s", got, line)
			}
			return
		}
	}
	t.Errorf("no urgent row in:\n%s", out.String())
}
