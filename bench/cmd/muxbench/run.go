package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// A plan is what a run measures.
type plan struct {
	workloads  []*workload
	frameworks []*framework
	reps       int
	params     params
}

// runAll measures every workload on every framework it applies to, reps
// times, interleaved: rep 1 of every workload on every framework, then rep
// 2, and so on, so that a noisy moment of the machine spreads over the
// frameworks instead of falling on one. Any failure, a wrong answer
// included, ends the run.
func runAll(ctx context.Context, pl plan) (results, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	paramsJSON, err := json.Marshal(pl.params)
	if err != nil {
		return nil, err
	}
	r := results{}
	for rep := 1; rep <= pl.reps; rep++ {
		for _, w := range pl.workloads {
			for _, f := range pl.frameworks {
				if w.applies(f) != "" {
					continue
				}
				start := time.Now()
				s, err := measureOnce(ctx, exe, string(paramsJSON), f, w)
				if err != nil {
					return nil, fmt.Errorf("rep %d, %s on %s: %w", rep, w.name, f.name, err)
				}
				fmt.Fprintf(os.Stderr, "rep %d/%d %-7s %-13s %s: %s (%.1fs)\n", rep, pl.reps, w.name, f.name,
					w.metrics[0].label, number(w.metrics[0].value(s)), time.Since(start).Seconds())
				r.add(w, f, s)
			}
		}
	}
	return r, nil
}

// measureOnce runs one measurement in a new server child and a new client
// child, relaying the client's requests to the server.
func measureOnce(ctx context.Context, exe, paramsJSON string, f *framework, w *workload) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, measurementTimeout+30*time.Second)
	defer cancel()
	common := []string{"-framework=" + f.name, "-workload=" + w.name, "-params=" + paramsJSON}

	srv, err := startChild(ctx, exe, append([]string{"-child=server"}, common...)...)
	if err != nil {
		return sample{}, err
	}
	defer srv.finish()
	var ready serverReady
	if err := srv.recv(&ready); err != nil {
		return sample{}, fmt.Errorf("server child: %w", err)
	}
	if ready.Err != "" {
		return sample{}, errors.New("server child: " + ready.Err)
	}

	cli, err := startChild(ctx, exe, append([]string{"-child=client", "-addr=" + ready.Addr}, common...)...)
	if err != nil {
		return sample{}, err
	}
	defer cli.finish()
	for {
		var line clientLine
		if err := cli.recv(&line); err != nil {
			return sample{}, fmt.Errorf("client child: %w", err)
		}
		switch {
		case line.Err != "":
			return sample{}, errors.New(line.Err)
		case line.Result != nil:
			return *line.Result, nil
		case line.Server != nil:
			var rep serverReply
			if err := srv.send(*line.Server); err != nil {
				return sample{}, fmt.Errorf("server child: %w", err)
			}
			if err := srv.recv(&rep); err != nil {
				return sample{}, fmt.Errorf("server child: %w", err)
			}
			if err := cli.send(rep); err != nil {
				return sample{}, fmt.Errorf("client child: %w", err)
			}
		default:
			return sample{}, errors.New("client child: empty control line")
		}
	}
}

// A childProcess is a running child: this binary run again, its stdin and
// stdout a lineConn, its stderr the parent's.
type childProcess struct {
	*lineConn
	cmd   *exec.Cmd
	stdin io.Closer
}

func startChild(ctx context.Context, exe string, args ...string) (*childProcess, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &childProcess{lineConn: newLineConn(out, in), cmd: cmd, stdin: in}, nil
}

// finish closes the child's stdin, which ends it, and waits for it.
func (c *childProcess) finish() {
	c.stdin.Close()
	c.cmd.Wait()
}
