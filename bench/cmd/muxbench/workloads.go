package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
)

// params are the sizes, counts and durations of the workloads.
type params struct {
	Duration     time.Duration `json:"duration"` // of each timed measurement
	Warmup       time.Duration `json:"warmup"`   // before each measurement
	SmallSize    int           `json:"small_size"`
	Callers      int           `json:"callers"` // W2, W2-pool, W7
	LargeSize    int           `json:"large_size"`
	LargeCallers int           `json:"large_callers"`
	StreamCount  int           `json:"stream_count"`
	StreamSize   int           `json:"stream_size"`
	BidiStreams  int           `json:"bidi_streams"`
	BidiMessages int           `json:"bidi_messages"`
	BidiSize     int           `json:"bidi_size"`
	FloodSize    int           `json:"flood_size"`
	Kills        int           `json:"kills"`                 // W10
	ProfileDir   string        `json:"profile_dir,omitempty"` // -profile
}

// defaultParams are the workloads as the report describes them.
func defaultParams(d time.Duration) params {
	return params{
		Duration: d, Warmup: d / 4,
		SmallSize: 64, Callers: 64,
		LargeSize: 1 << 20, LargeCallers: 4,
		StreamCount: 200_000, StreamSize: 1 << 10,
		BidiStreams: 1000, BidiMessages: 10, BidiSize: 1 << 10,
		FloodSize: 1 << 20,
		Kills:     20,
	}
}

// quickParams are tiny sizes and counts, for tests.
func quickParams() params {
	return params{
		Duration: 40 * time.Millisecond, Warmup: 10 * time.Millisecond,
		SmallSize: 64, Callers: 64,
		LargeSize: 64 << 10, LargeCallers: 4,
		StreamCount: 2000, StreamSize: 1 << 10,
		BidiStreams: 100, BidiMessages: 3, BidiSize: 1 << 10,
		FloodSize: 64 << 10,
		Kills:     3,
	}
}

// A sample is the result of one measurement of one workload on one
// framework: what the client child measured, and the server child's cost
// over the same window.
type sample struct {
	Ops     int64         `json:"ops"` // calls, messages or round trips in the window
	Elapsed time.Duration `json:"elapsed"`
	Bytes   int64         `json:"bytes"` // message data bytes moved in the window, both ways
	P50     time.Duration `json:"p50,omitempty"`
	P99     time.Duration `json:"p99,omitempty"`
	// LoadedP50 and LoadedP99 are W8's latencies under load, and
	// UrgentP50 and UrgentP99 those of urgent calls under load, measured
	// only where the framework can mark calls urgent (priorityCaller).
	LoadedP50 time.Duration `json:"loaded_p50,omitempty"`
	LoadedP99 time.Duration `json:"loaded_p99,omitempty"`
	UrgentP50 time.Duration `json:"urgent_p50,omitempty"`
	UrgentP99 time.Duration `json:"urgent_p99,omitempty"`
	// Failed is W10's failed calls, and Rejoin its median time from a
	// server's restart until it answered a call (P50 and P99 are then
	// those of its recovery times).
	Failed  int64         `json:"failed,omitempty"`
	Rejoin  time.Duration `json:"rejoin,omitempty"`
	Client  cost          `json:"client"`
	Server  cost          `json:"server"`
	Checked int64         `json:"checked"` // answer bytes compared, by both sides
}

// A workload is one thing the report measures.
type workload struct {
	name  string
	about string
	// applies says why the workload does not apply to f, or "".
	applies func(f *framework) string
	// serialised says whether f runs the workload one call at a time.
	serialised func(f *framework) bool
	run        func(ctx context.Context, e *clientEnv) (sample, error)
	metrics    []metric
}

func always(*framework) string { return "" }
func never(*framework) bool    { return false }

// multiplexed is the applies of a workload that needs concurrent calls on
// one connection.
func multiplexed(f *framework) string {
	if !f.multiplexes {
		return "no multiplexing"
	}
	return ""
}

// withCompression is the applies of W3-gzip.
func withCompression(f *framework) string {
	if !f.compresses {
		return "no per-call compression"
	}
	return ""
}

// withCallbacks is the applies of W7.
func withCallbacks(f *framework) string {
	if !f.callbacks {
		return "no calls to the client"
	}
	return ""
}

// oneCallAtATime is the serialised of workloads with concurrent calls on
// one connection.
func oneCallAtATime(f *framework) bool { return !f.multiplexes }

// workloads are the workloads, in the report's order.
var workloads = []*workload{
	{
		name: "W1", about: "unary 64 B, 1 caller",
		applies: always, serialised: never, run: runW1,
		metrics: []metric{
			{label: "calls/s", higher: true, value: perSecond},
			{label: "p50 latency µs", value: func(s sample) float64 { return micros(s.P50) }},
		},
	},
	{
		name: "W2", about: "unary 64 B, 64 callers, 1 connection",
		applies: always, serialised: oneCallAtATime, run: runW2,
		metrics: []metric{{label: "calls/s", higher: true, value: perSecond}},
	},
	{
		name: "W2-pool", about: "unary 64 B, 64 callers, 64 connections",
		applies: always, serialised: never, run: runW2Pool,
		metrics: []metric{{label: "calls/s", higher: true, value: perSecond}},
	},
	{
		name: "W3", about: "unary 1 MiB echo, 4 callers, 1 connection",
		applies: always, serialised: oneCallAtATime, run: runW3,
		metrics: []metric{
			{label: "MB/s (request + response data)", higher: true, value: func(s sample) float64 {
				return float64(s.Bytes) / s.Elapsed.Seconds() / 1e6
			}},
			{label: "KiB allocated/call, client", value: func(s sample) float64 { return kibPerOp(s.Client.AllocBytes, s) }},
			{label: "KiB allocated/call, server", value: func(s sample) float64 { return kibPerOp(s.Server.AllocBytes, s) }},
			{label: "KiB allocated/call, both", value: func(s sample) float64 {
				return kibPerOp(s.Client.AllocBytes+s.Server.AllocBytes, s)
			}},
		},
	},
	{
		name: "W3-gzip", about: "unary 1 MiB echo of JSON lines, gzip per call, 4 callers, 1 connection",
		applies: withCompression, serialised: oneCallAtATime, run: runW3Gzip,
		metrics: []metric{
			{label: "MB/s (request + response data, uncompressed)", higher: true, value: func(s sample) float64 {
				return float64(s.Bytes) / s.Elapsed.Seconds() / 1e6
			}},
			{label: "CPU µs/call, client", value: func(s sample) float64 { return cpuPerOp(s.Client.CPU, s) }},
			{label: "CPU µs/call, server", value: func(s sample) float64 { return cpuPerOp(s.Server.CPU, s) }},
			{label: "CPU µs/call, both", value: func(s sample) float64 { return cpuPerOp(s.Client.CPU+s.Server.CPU, s) }},
			{label: "KiB allocated/call, client", value: func(s sample) float64 { return kibPerOp(s.Client.AllocBytes, s) }},
			{label: "KiB allocated/call, server", value: func(s sample) float64 { return kibPerOp(s.Server.AllocBytes, s) }},
			{label: "KiB allocated/call, both", value: func(s sample) float64 {
				return kibPerOp(s.Client.AllocBytes+s.Server.AllocBytes, s)
			}},
		},
	},
	{
		name: "W4", about: "server stream 200,000 x 1 KiB",
		applies: always, serialised: never, run: runW4,
		metrics: []metric{
			{label: "msg/s", higher: true, value: perSecond},
			{label: "CPU µs/msg, client", value: func(s sample) float64 { return cpuPerOp(s.Client.CPU, s) }},
			{label: "CPU µs/msg, server", value: func(s sample) float64 { return cpuPerOp(s.Server.CPU, s) }},
			{label: "CPU µs/msg, both", value: func(s sample) float64 { return cpuPerOp(s.Client.CPU+s.Server.CPU, s) }},
		},
	},
	{
		name: "W5", about: "bidi ping-pong 64 B, 1 stream",
		applies: always, serialised: never, run: runW5,
		metrics: []metric{{label: "round trips/s", higher: true, value: perSecond}},
	},
	{
		name: "W6", about: "1,000 bidi streams x 10 x 1 KiB, 1 connection",
		applies: always, serialised: oneCallAtATime, run: runW6,
		metrics: []metric{
			{label: "total ms", value: func(s sample) float64 { return float64(s.Elapsed) / 1e6 }},
			{label: "server peak heap MiB", value: func(s sample) float64 { return mib(s.Server.PeakHeap) }},
			{label: "server peak RSS MiB", value: func(s sample) float64 { return mib(s.Server.PeakRSS) }},
		},
	},
	{
		name: "W7", about: "callback unary 64 B, server to client, 64 callers",
		applies: withCallbacks, serialised: never, run: runW7,
		metrics: []metric{{label: "calls/s", higher: true, value: perSecond}},
	},
	{
		name: "W8", about: "unary 64 B, 1 caller, beside a 1 MiB server stream",
		applies: multiplexed, serialised: never, run: runW8,
		metrics: []metric{
			{label: "idle p50 µs", value: func(s sample) float64 { return micros(s.P50) }},
			{label: "idle p99 µs", value: func(s sample) float64 { return micros(s.P99) }},
			{label: "loaded p50 µs", value: func(s sample) float64 { return micros(s.LoadedP50) }},
			{label: "loaded p99 µs", value: func(s sample) float64 { return micros(s.LoadedP99) }},
			{label: "loaded p99 / idle p99", value: func(s sample) float64 { return float64(s.LoadedP99) / float64(s.P99) }},
			{label: "urgent loaded p99 µs", optional: true, value: func(s sample) float64 { return micros(s.UrgentP99) }},
		},
	},
	{
		name: "W9", about: "unary 64 B, 64 callers, 1 client over 3 servers, round robin",
		applies: hasFleetClient, serialised: never, run: runW9(false),
		metrics: []metric{{label: "calls/s", higher: true, value: perSecond}},
	},
	{
		name: "W9-lo", about: "unary 64 B, 64 callers, 1 client over 3 servers, least outstanding",
		applies: hasFleetClient, serialised: never, run: runW9(true),
		metrics: []metric{{label: "calls/s", higher: true, value: perSecond}},
	},
	{
		name: "W10", about: "failover: 1 caller, 1 client over 3 servers, one killed and restarted at a time",
		applies: hasFleetClient, serialised: never, run: runW10,
		metrics: []metric{
			{label: "recovery p50 ms", value: func(s sample) float64 { return millis(s.P50) }},
			{label: "recovery p99 ms", value: func(s sample) float64 { return millis(s.P99) }},
			{label: "failed calls/kill", mayBeZero: true, value: func(s sample) float64 { return float64(s.Failed) / float64(s.Ops) }},
			{label: "rejoin p50 ms", value: func(s sample) float64 { return millis(s.Rejoin) }},
		},
	},
}

// workloadNamed returns the workload called name.
func workloadNamed(name string) (*workload, error) {
	var names []string
	for _, w := range workloads {
		if strings.EqualFold(w.name, name) {
			return w, nil
		}
		names = append(names, w.name)
	}
	return nil, fmt.Errorf("unknown workload %q (known: %s)", name, strings.Join(names, ", "))
}

func perSecond(s sample) float64     { return float64(s.Ops) / s.Elapsed.Seconds() }
func micros(d time.Duration) float64 { return float64(d) / 1e3 }
func millis(d time.Duration) float64 { return float64(d) / 1e6 }
func mib(b uint64) float64           { return float64(b) / (1 << 20) }
func kibPerOp(b uint64, s sample) float64 {
	return float64(b) / 1024 / float64(s.Ops)
}
func cpuPerOp(ns int64, s sample) float64 { return float64(ns) / 1e3 / float64(s.Ops) }

// clientEnv is what a workload runs with in the client child.
type clientEnv struct {
	fw     *framework
	addr   string
	p      params
	server serverControl
}

// dial connects to the server child.
func (e *clientEnv) dial(ctx context.Context, o dialOptions) (conn, error) {
	c, err := e.fw.dial(ctx, e.addr, o)
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", e.fw.name, err)
	}
	return c, nil
}

// measure runs f in a measured window on both sides and fills s's costs
// and, unless f set it, its elapsed time.
func (e *clientEnv) measure(s *sample, f func() error) error {
	if _, err := e.server.ask(serverRequest{Op: "begin"}); err != nil {
		return err
	}
	w := beginWindow()
	start := time.Now()
	err := f()
	elapsed := time.Since(start)
	s.Client = w.end()
	rep, endErr := e.server.ask(serverRequest{Op: "end"})
	if err != nil {
		return err
	}
	if endErr != nil {
		return endErr
	}
	s.Server = *rep.Cost
	if s.Elapsed == 0 {
		s.Elapsed = elapsed
	}
	return nil
}

// unaryLoad makes unary calls of size bytes through callers, one
// goroutine per element, for d, checking each answer, and records each
// call's latency in lat if it is not nil. It returns the calls made and
// the time from the start until the last caller stopped.
func unaryLoad(ctx context.Context, callers []unaryCaller, size int, d time.Duration, lat *latencyLog) (int64, time.Duration, error) {
	return unaryLoadOf(ctx, callers, pattern, size, d, lat)
}

// unaryLoadOf is unaryLoad with requests of body's first size bytes.
func unaryLoadOf(ctx context.Context, callers []unaryCaller, body []byte, size int, d time.Duration, lat *latencyLog) (int64, time.Duration, error) {
	var (
		calls atomic.Int64
		wg    sync.WaitGroup
		errs  = make([]error, len(callers))
	)
	start := time.Now()
	deadline := start.Add(d)
	for i, c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newRequestOf(body, i, size)
			for seq := uint64(0); ; seq++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				sent := req.next(seq)
				ans, err := c.unary(ctx, sent)
				if err == nil {
					err = checkEcho(sent, ans)
				}
				if err != nil {
					errs[i] = err
					return
				}
				if lat != nil {
					lat.record(time.Since(t0))
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	return calls.Load(), time.Since(start), errors.Join(errs...)
}

// A latencyLog records call latencies in room allocated in advance, so
// that recording allocates nothing in a measured window.
type latencyLog struct {
	mu sync.Mutex
	d  []time.Duration
}

// newLatencyLog returns a log with room for a million calls, beyond which
// it grows.
func newLatencyLog() *latencyLog { return &latencyLog{d: make([]time.Duration, 0, 1<<20)} }

func (l *latencyLog) record(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// percentile returns the q-quantile of the latencies, 0 for none.
func (l *latencyLog) percentile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return l.d[min(len(l.d)-1, int(q*float64(len(l.d))))]
}

// repeat returns c n times, for n callers sharing one connection.
func repeat(c unaryCaller, n int) []unaryCaller {
	cs := make([]unaryCaller, n)
	for i := range cs {
		cs[i] = c
	}
	return cs
}

// timedUnary is W1, W2 and W3: callers unary calls of size bytes on the
// connection c, timed, with a warm-up first.
func timedUnary(ctx context.Context, e *clientEnv, callers []unaryCaller, size int, latencies bool) (sample, error) {
	return timedUnaryOf(ctx, e, callers, pattern, size, latencies)
}

// timedUnaryOf is timedUnary with requests of body's first size bytes
// (W3-gzip).
func timedUnaryOf(ctx context.Context, e *clientEnv, callers []unaryCaller, body []byte, size int, latencies bool) (sample, error) {
	var s sample
	if _, _, err := unaryLoadOf(ctx, callers, body, size, e.p.Warmup, nil); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}
	var lat *latencyLog
	if latencies {
		lat = newLatencyLog()
	}
	err := e.measure(&s, func() error {
		var err error
		s.Ops, s.Elapsed, err = unaryLoadOf(ctx, callers, body, size, e.p.Duration, lat)
		return err
	})
	s.Bytes = 2 * s.Ops * int64(size)
	if latencies {
		s.P50, s.P99 = lat.percentile(0.50), lat.percentile(0.99)
	}
	return s, err
}

func runW1(ctx context.Context, e *clientEnv) (sample, error) {
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return sample{}, err
	}
	defer c.close()
	return timedUnary(ctx, e, repeat(c, 1), e.p.SmallSize, true)
}

func runW2(ctx context.Context, e *clientEnv) (sample, error) {
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return sample{}, err
	}
	defer c.close()
	return timedUnary(ctx, e, repeat(c, e.p.Callers), e.p.SmallSize, false)
}

func runW2Pool(ctx context.Context, e *clientEnv) (sample, error) {
	callers := make([]unaryCaller, e.p.Callers)
	for i := range callers {
		c, err := e.dial(ctx, dialOptions{})
		if err != nil {
			return sample{}, err
		}
		defer c.close()
		callers[i] = c
	}
	return timedUnary(ctx, e, callers, e.p.SmallSize, false)
}

func runW3(ctx context.Context, e *clientEnv) (sample, error) {
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return sample{}, err
	}
	defer c.close()
	return timedUnary(ctx, e, repeat(c, e.p.LargeCallers), e.p.LargeSize, false)
}

// runW3Gzip is W3 with every call compressed by gzip both ways, on
// requests of textPattern, which compresses.
func runW3Gzip(ctx context.Context, e *clientEnv) (sample, error) {
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return sample{}, err
	}
	defer c.close()
	gc, ok := c.(gzipCaller)
	if !ok {
		return sample{}, fmt.Errorf("%s: the connection cannot compress calls", e.fw.name)
	}
	return timedUnaryOf(ctx, e, repeat(gzipCalls{gc}, e.p.LargeCallers), textPattern, e.p.LargeSize, false)
}

// gzipCalls makes a gzipCaller's compressed calls.
type gzipCalls struct{ gc gzipCaller }

func (g gzipCalls) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return g.gc.unaryGzip(ctx, in)
}

// receiveStream calls ServerStream for count messages of size bytes and
// checks each.
func receiveStream(ctx context.Context, c conn, count, size int) error {
	st, err := c.serverStream(ctx, &benchpb.Payload{Count: int64(count), Size: int64(size)})
	if err != nil {
		return err
	}
	for k := 0; ; k++ {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if k != count {
				return fmt.Errorf("server stream ended after %d messages, want %d", k, count)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if err := checkStreamed(m, int64(k), size); err != nil {
			return err
		}
	}
}

func runW4(ctx context.Context, e *clientEnv) (sample, error) {
	var s sample
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return s, err
	}
	defer c.close()
	if err := receiveStream(ctx, c, e.p.StreamCount/10, e.p.StreamSize); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}
	err = e.measure(&s, func() error { return receiveStream(ctx, c, e.p.StreamCount, e.p.StreamSize) })
	s.Ops = int64(e.p.StreamCount)
	s.Bytes = s.Ops * int64(e.p.StreamSize)
	return s, err
}

// pingPong sends size-byte messages on st and checks each echo, for d or,
// with d 0, n times; it returns the round trips made.
func pingPong(st bidiStream, req *request, d time.Duration, n int) (int64, error) {
	deadline := time.Now().Add(d)
	var trips int64
	for seq := uint64(0); ; seq++ {
		if d > 0 && !time.Now().Before(deadline) || d == 0 && int(seq) == n {
			return trips, nil
		}
		sent := req.next(seq)
		if err := st.Send(sent); err != nil {
			return trips, err
		}
		ans, err := st.Recv()
		if err == nil {
			err = checkEcho(sent, ans)
		}
		if err != nil {
			return trips, err
		}
		trips++
	}
}

// endBidi ends the caller's side of st and reads its end.
func endBidi(st bidiStream) error {
	if err := st.CloseSend(); err != nil {
		return err
	}
	if m, err := st.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("bidi stream after CloseSend: got %s, error %v; want io.EOF", describe(m), err)
	}
	return nil
}

func runW5(ctx context.Context, e *clientEnv) (sample, error) {
	var s sample
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return s, err
	}
	defer c.close()
	st, err := c.bidi(ctx)
	if err != nil {
		return s, err
	}
	req := newRequest(0, e.p.SmallSize)
	if _, err := pingPong(st, req, e.p.Warmup, 0); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}
	err = e.measure(&s, func() error {
		var err error
		s.Ops, err = pingPong(st, req, e.p.Duration, 0)
		return err
	})
	s.Bytes = 2 * s.Ops * int64(e.p.SmallSize)
	if err != nil {
		return s, err
	}
	return s, endBidi(st)
}

// manyStreams opens n bidi streams on c at once and exchanges msgs
// messages of size bytes on each.
func manyStreams(ctx context.Context, c conn, n, msgs, size int) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := c.bidi(ctx)
			if err != nil {
				errs[i] = err
				return
			}
			if _, err := pingPong(st, newRequest(i, size), 0, msgs); err != nil {
				errs[i] = err
				return
			}
			errs[i] = endBidi(st)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func runW6(ctx context.Context, e *clientEnv) (sample, error) {
	var s sample
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return s, err
	}
	defer c.close()
	if err := manyStreams(ctx, c, e.p.BidiStreams/10, e.p.BidiMessages, e.p.BidiSize); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}
	err = e.measure(&s, func() error { return manyStreams(ctx, c, e.p.BidiStreams, e.p.BidiMessages, e.p.BidiSize) })
	s.Ops = int64(e.p.BidiStreams * e.p.BidiMessages)
	s.Bytes = 2 * s.Ops * int64(e.p.BidiSize)
	return s, err
}

func runW7(ctx context.Context, e *clientEnv) (sample, error) {
	var s sample
	c, err := e.dial(ctx, dialOptions{callback: &callbackService{}})
	if err != nil {
		return s, err
	}
	defer c.close()
	load := serverRequest{Op: "callback", Callers: e.p.Callers, Size: e.p.SmallSize, Duration: e.p.Warmup}
	if _, err := e.server.ask(load); err != nil {
		return s, fmt.Errorf("warm-up: %w", err)
	}
	load.Duration = e.p.Duration
	err = e.measure(&s, func() error {
		rep, err := e.server.ask(load)
		s.Ops, s.Elapsed, s.Checked = rep.Calls, rep.Elapsed, rep.Checked
		return err
	})
	s.Bytes = 2 * s.Ops * int64(e.p.SmallSize)
	return s, err
}

// runW8 measures one caller's unary latency on an idle connection (the
// measured window, for the costs), then beside a server stream of large
// messages sent as fast as the connection takes them, and then, where the
// framework can mark calls urgent, with urgent calls beside that stream.
func runW8(ctx context.Context, e *clientEnv) (sample, error) {
	var s sample
	c, err := e.dial(ctx, dialOptions{})
	if err != nil {
		return s, err
	}
	defer c.close()
	s, err = timedUnary(ctx, e, repeat(c, 1), e.p.SmallSize, true)
	if err != nil {
		return s, err
	}

	floodCtx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	flood, err := c.serverStream(floodCtx, &benchpb.Payload{Count: 0, Size: int64(e.p.FloodSize)})
	if err != nil {
		return s, err
	}
	flowing := make(chan struct{})
	floodDone := make(chan error, 1)
	go func() {
		for k := int64(0); ; k++ {
			m, err := flood.Recv()
			if err != nil {
				if floodCtx.Err() != nil {
					err = nil // the end of the flood: cancelled
				}
				floodDone <- err
				return
			}
			if err := checkStreamed(m, k, e.p.FloodSize); err != nil {
				floodDone <- err
				return
			}
			if k == 0 {
				close(flowing)
			}
		}
	}()
	select {
	case <-flowing:
	case err := <-floodDone:
		return s, fmt.Errorf("server stream: %w", err)
	}

	latencyUnderLoad := func(c unaryCaller) (p50, p99 time.Duration, err error) {
		lat := newLatencyLog()
		_, _, err = unaryLoad(ctx, []unaryCaller{c}, e.p.SmallSize, e.p.Duration, lat)
		return lat.percentile(0.50), lat.percentile(0.99), err
	}
	s.LoadedP50, s.LoadedP99, err = latencyUnderLoad(c)
	if pc, ok := c.(priorityCaller); ok && err == nil {
		s.UrgentP50, s.UrgentP99, err = latencyUnderLoad(urgentCaller{pc})
	}
	stopFlood()
	if floodErr := <-floodDone; err == nil {
		err = floodErr
	}
	return s, err
}

// urgentCaller makes a priorityCaller's urgent calls.
type urgentCaller struct{ pc priorityCaller }

func (u urgentCaller) unary(ctx context.Context, in *benchpb.Payload) (*benchpb.Payload, error) {
	return u.pc.unaryUrgent(ctx, in)
}
