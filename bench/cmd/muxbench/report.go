package main

import (
	"fmt"
	"io"
	"time"
)

// A report is what writeReport needs besides the results.
type report struct {
	command    string
	workloads  []*workload
	frameworks []*framework
	reps       int
	params     params
	quick      bool
}

// generalDeviations are the departures from the frameworks' defaults, and
// the asymmetries of the comparison, that concern no single framework.
var generalDeviations = []string{
	"No framework's settings are changed: every server and client is built with its defaults (gRPC-Go: grpc.NewServer() and grpc.NewClient with insecure credentials; DRPC: drpcmux, drpcserver.New, drpcconn.New; muxrpc: rpc.NewServer and rpc.Dial, with mux.Config{Transport: mux.Smux} for muxrpc-smux).",
	"W2-pool dials 64 separate connections (64 gRPC ClientConns, 64 DRPC conns, 64 muxrpc peers, 64 raw conns), one caller each.",
	"W3-gzip is W3 with gzip (gRPC-Go's google.golang.org/grpc/encoding/gzip, default level) on every call, both ways, asked per call (grpc.UseCompressor(gzip.Name) on gRPC-Go's client, grpc-sharedport's and muxrpc-grpcstub's; rpc.UseCompressor(\"gzip\") on muxrpc's); the servers are unchanged and answer with the caller's compressor. Its requests are JSON lines (records of a counter, a name drawn from 32 and a random number), which gzip makes about 7 times smaller; its MB/s count the uncompressed data, as W3's do. DRPC and raw have no per-call compression (n/a).",
	"W7 applies to muxrpc only: gRPC-Go, DRPC and raw cannot call a service the client exposes on the client's own connection.",
	"W8 applies to the frameworks that multiplex calls on a connection (gRPC-Go, muxrpc on both transports); DRPC and raw carry one call at a time, so a unary call cannot run beside a stream.",
	"W9, W9-lo and W10 apply to gRPC-Go and muxrpc, whose long-lived clients balance over many servers (grpc.NewClient over a manual resolver's addresses with round_robin or least_request_experimental; rpc.NewClient over a static: target with RoundRobin or LeastOutstanding); DRPC and raw have none. The 3 servers are 3 listeners with a server each in the one server child, whose costs count all 3. Both clients reconnect with the same short backoff instead of the defaults: 100 ms by 1.6 up to 1 s, ±20% jitter, at least 1 s per attempt.",
	"W10 kills a server with Stop (gRPC-Go grpc.Server.Stop, muxrpc rpc.Server.Stop: the listener and every connection, abruptly); a recovery is from Stop's return to the end of the first call started after it that succeeds; calls wait for ready (grpc.WaitForReady(true), rpc.WaitForReady(true)). Its costs per operation are per kill.",
}

// writeReport writes the run's markdown report.
func writeReport(out io.Writer, r results, rp report) {
	fmt.Fprintln(out, "# muxbench: muxrpc compared with gRPC-Go, DRPC and a raw lower bound")
	fmt.Fprintln(out)
	for _, line := range machine() {
		fmt.Fprintf(out, "- %s\n", line)
	}
	fmt.Fprintf(out, "- Date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(out, "- Command: `%s`\n", rp.command)
	fmt.Fprintf(out, "- %d interleaved rep(s); timed measurements %v each after a %v warm-up; each measurement in a fresh server process and client process over loopback TCP\n",
		rp.reps, rp.params.Duration, rp.params.Warmup)
	if rp.quick {
		fmt.Fprintln(out, "- **-quick**: tiny sizes, counts and durations, not those the workloads' names say; for tests, not for comparing")
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "## Results")
	fmt.Fprintln(out)
	writeTable(out, r, rp.workloads, rp.frameworks, func(w *workload) []metric { return w.metrics })
	fmt.Fprintln(out)
	fmt.Fprintln(out, "## Cost per operation")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Over each measured window: heap allocations (runtime.MemStats Mallocs and TotalAlloc) and CPU time (getrusage, user + system) of each process, divided by the operations of the window (a call; for W4 a message, for W5 and W6 a round trip; for W8 a call of its idle phase; for W10 a kill and its recovery).")
	fmt.Fprintln(out)
	writeTable(out, r, rp.workloads, rp.frameworks, func(*workload) []metric { return costMetrics })
	fmt.Fprintln(out)
	fmt.Fprintln(out, "## Legend")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "- A cell is the median over the reps, with the lowest and highest in brackets.")
	fmt.Fprintln(out, "- The ratio columns compare muxrpc-native's median with another framework's, oriented so that **above 1 means muxrpc-native is better** (faster, or cheaper); against raw, the ratio is the distance to the lower bound.")
	fmt.Fprintln(out, "- † serialised: the framework carries one call at a time on a connection, so the concurrent calls of this workload took turns.")
	fmt.Fprintln(out, "- MB/s (W3) counts the message data of requests and responses, both ways, in 10^6 bytes.")
	fmt.Fprintln(out, "- W6's heap is the peak of HeapInuse (runtime/metrics, sampled every 2 ms); its RSS is the peak of VmRSS sampled alike and of VmHWM, reset at the start of the window.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "## Deviations and notes")
	fmt.Fprintln(out)
	for _, d := range generalDeviations {
		fmt.Fprintf(out, "- %s\n", d)
	}
	for _, f := range rp.frameworks {
		for _, d := range f.deviations {
			fmt.Fprintf(out, "- %s\n", d)
		}
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "## Answers checked")
	fmt.Fprintln(out)
	for _, f := range rp.frameworks {
		var total, n int64
		for _, w := range rp.workloads {
			for _, s := range r[w][f.name] {
				total += s.Checked
				n++
			}
		}
		fmt.Fprintf(out, "- %s: %d answer bytes checked in %d measurements, all as expected\n", f.name, total, n)
	}
}
