package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// A metric is one row of the report: a number taken from each sample of a
// workload on a framework.
type metric struct {
	label string
	// higher says that a higher value is better; otherwise lower is.
	higher bool
	// optional rows appear only when some framework measured them.
	optional bool
	// mayBeZero rows count events that may not happen (W10's failed
	// calls): 0 is a measurement, not a missing one.
	mayBeZero bool
	value     func(sample) float64
}

// costMetrics are the rows of the cost table, for every workload: what
// each side spent per operation over the measured window.
var costMetrics = []metric{
	{label: "allocs/op, client", value: func(s sample) float64 { return float64(s.Client.Mallocs) / float64(s.Ops) }},
	{label: "allocs/op, server", value: func(s sample) float64 { return float64(s.Server.Mallocs) / float64(s.Ops) }},
	{label: "B/op, client", value: func(s sample) float64 { return float64(s.Client.AllocBytes) / float64(s.Ops) }},
	{label: "B/op, server", value: func(s sample) float64 { return float64(s.Server.AllocBytes) / float64(s.Ops) }},
	{label: "CPU µs/op, client", value: func(s sample) float64 { return cpuPerOp(s.Client.CPU, s) }},
	{label: "CPU µs/op, server", value: func(s sample) float64 { return cpuPerOp(s.Server.CPU, s) }},
	{label: "CPU µs/op, both", value: func(s sample) float64 { return cpuPerOp(s.Client.CPU+s.Server.CPU, s) }},
}

// results are the samples of a run, by workload and framework name, in
// the order of the reps.
type results map[*workload]map[string][]sample

func (r results) add(w *workload, f *framework, s sample) {
	if r[w] == nil {
		r[w] = map[string][]sample{}
	}
	r[w][f.name] = append(r[w][f.name], s)
}

// A summary is a metric's values over the reps of one framework.
type summary struct {
	median, min, max float64
	ok               bool // measured: the workload applies
	unmeasurable     bool // the framework cannot measure this optional metric
}

func summarize(samples []sample, m metric) summary {
	if len(samples) == 0 {
		return summary{}
	}
	vs := make([]float64, len(samples))
	for i, s := range samples {
		vs[i] = m.value(s)
	}
	slices.Sort(vs)
	med := vs[len(vs)/2]
	if len(vs)%2 == 0 {
		med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return summary{median: med, min: vs[0], max: vs[len(vs)-1], ok: true}
}

// ratioColumns are the frameworks muxrpc-native is compared with, each in
// a column of ratios, and the columns' headings.
var ratioColumns = []struct{ framework, heading string }{
	{"grpc", "native vs grpc"},
	{"drpc", "native vs drpc"},
	{"raw", "native vs raw"},
}

// writeTable writes one markdown table: a row per workload and metric,
// a column per framework, then muxrpc-native's ratios.
func writeTable(out io.Writer, r results, ws []*workload, fws []*framework, metricsOf func(*workload) []metric) {
	fmt.Fprint(out, "| Workload | Metric |")
	for _, f := range fws {
		fmt.Fprintf(out, " %s |", f.name)
	}
	for _, rc := range ratioColumns {
		fmt.Fprintf(out, " %s |", rc.heading)
	}
	fmt.Fprint(out, "\n|---|---|")
	fmt.Fprint(out, strings.Repeat("--:|", len(fws)+len(ratioColumns)))
	fmt.Fprintln(out)
	for _, w := range ws {
		for _, m := range metricsOf(w) {
			sums := map[string]summary{}
			measured := false
			for _, f := range fws {
				s := summarize(r[w][f.name], m)
				if m.optional && s.ok && s.median == 0 {
					s = summary{unmeasurable: true}
				}
				sums[f.name] = s
				measured = measured || s.ok
			}
			if m.optional && !measured {
				continue
			}
			fmt.Fprintf(out, "| %s %s | %s |", w.name, w.about, m.label)
			for _, f := range fws {
				fmt.Fprintf(out, " %s |", cell(w, f, sums[f.name]))
			}
			for _, rc := range ratioColumns {
				fmt.Fprintf(out, " %s |", ratio(m, sums[muxrpcNative.name], sums[rc.framework]))
			}
			fmt.Fprintln(out)
		}
	}
}

// cell formats a summary: the median and, over several reps, the range.
func cell(w *workload, f *framework, s summary) string {
	if !s.ok {
		if w.applies(f) != "" || s.unmeasurable {
			return "n/a"
		}
		return "–" // not run
	}
	c := number(s.median)
	if s.min != s.max {
		c += " (" + number(s.min) + "–" + number(s.max) + ")"
	}
	if w.serialised(f) {
		c += " †"
	}
	return c
}

// ratio is muxrpc-native's median against another's, oriented so that
// above 1 means muxrpc-native is better.
func ratio(m metric, native, other summary) string {
	if !native.ok || !other.ok {
		return "n/a"
	}
	num, den := native.median, other.median
	if !m.higher {
		num, den = den, num
	}
	switch {
	case num == den:
		return "1.00"
	case den == 0:
		return "∞"
	}
	return fmt.Sprintf("%.2f", num/den)
}

// number formats v with about three significant digits.
func number(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a == 0:
		return "0"
	}
	return fmt.Sprintf("%.3f", v)
}
