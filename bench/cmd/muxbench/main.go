// Command muxbench compares muxrpc with gRPC-Go, DRPC and a hand-written
// lower bound ("raw") on a set of workloads, and prints a markdown report.
//
//	cd bench && go run ./cmd/muxbench [-quick] [-reps 5] [-duration 1s]
//		[-workloads W1,W4] [-frameworks grpc,muxrpc-native]
//
// Every measurement runs in two fresh processes, a server and a client,
// both this binary run again (with the hidden -child flag), talking over
// loopback TCP; the parent starts them, relays the client's requests to
// the server over their stdin and stdout, and collects the result. See
// bench/README.md for the workloads and what is measured.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	var (
		child          = flag.String("child", "", "internal: run as the server or client child of a measurement")
		childFramework = flag.String("framework", "", "internal: the child's framework")
		childWorkload  = flag.String("workload", "", "internal: the client child's workload")
		childAddr      = flag.String("addr", "", "internal: the server child's address, for the client child")
		childParams    = flag.String("params", "", "internal: the workloads' parameters, as JSON")

		quick       = flag.Bool("quick", false, "tiny sizes, counts and durations, one rep: for tests")
		reps        = flag.Int("reps", 5, "interleaved repetitions of every measurement")
		duration    = flag.Duration("duration", time.Second, "length of each timed measurement (warm-up: a quarter of it)")
		workloadSel = flag.String("workloads", "", "comma-separated workloads to run (default all: "+names(workloads, func(w *workload) string { return w.name })+")")
		fwSel       = flag.String("frameworks", "", "comma-separated frameworks to run (default all: "+names(frameworks, func(f *framework) string { return f.name })+")")
		profileDir  = flag.String("profile", "", "write each side's CPU and allocation profiles of its measured window into this directory, as WORKLOAD-FRAMEWORK-SIDE-{cpu,allocs}.pprof (the last rep's)")
	)
	flag.Parse()

	if *child != "" {
		if err := runChild(*child, *childFramework, *childWorkload, *childAddr, *childParams); err != nil {
			fmt.Fprintf(os.Stderr, "muxbench %s child (%s %s): %v\n", *child, *childFramework, *childWorkload, err)
			os.Exit(1)
		}
		return
	}

	p := defaultParams(*duration)
	if *quick {
		p = quickParams()
		if !flagSet("reps") {
			*reps = 1
		}
	}
	if *profileDir != "" {
		var err error
		if p.ProfileDir, err = filepath.Abs(*profileDir); err == nil {
			err = os.MkdirAll(p.ProfileDir, 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "muxbench: -profile:", err)
			os.Exit(2)
		}
	}
	ws, err := selected(*workloadSel, workloads, workloadNamed)
	if err == nil && *reps < 1 {
		err = fmt.Errorf("-reps %d: at least 1", *reps)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "muxbench:", err)
		os.Exit(2)
	}
	fws, err := selected(*fwSel, frameworks, frameworkNamed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "muxbench:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r, err := runAll(ctx, plan{workloads: ws, frameworks: fws, reps: *reps, params: p})
	if err != nil {
		fmt.Fprintln(os.Stderr, "muxbench:", err)
		os.Exit(1)
	}
	writeReport(os.Stdout, r, report{
		command:    strings.Join(append([]string{"go run ./cmd/muxbench"}, os.Args[1:]...), " "),
		workloads:  ws,
		frameworks: fws,
		reps:       *reps,
		params:     p,
		quick:      *quick,
	})
}

// runChild runs this process as a child of a measurement.
func runChild(role, fwName, wlName, addr, paramsJSON string) error {
	fw, err := frameworkNamed(fwName)
	if err != nil {
		return err
	}
	var p params
	if err := json.Unmarshal([]byte(paramsJSON), &p); err != nil {
		return fmt.Errorf("-params: %w", err)
	}
	if p.ProfileDir != "" {
		profilePrefix = filepath.Join(p.ProfileDir, wlName+"-"+fwName+"-"+role)
	}
	switch role {
	case "server":
		return runServerChild(fw)
	case "client":
		wl, err := workloadNamed(wlName)
		if err != nil {
			return err
		}
		return runClientChild(fw, wl, addr, p)
	}
	return fmt.Errorf("unknown child role %q", role)
}

// selected returns the elements of all named in the comma-separated list,
// or all of them for an empty list.
func selected[T any](list string, all []T, named func(string) (T, error)) ([]T, error) {
	if list == "" {
		return all, nil
	}
	var out []T
	for name := range strings.SplitSeq(list, ",") {
		v, err := named(strings.TrimSpace(name))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func names[T any](all []T, name func(T) string) string {
	var s []string
	for _, v := range all {
		s = append(s, name(v))
	}
	return strings.Join(s, ",")
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
