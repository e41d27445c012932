package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQuickRunReportsEverything builds muxbench and runs it in -quick mode
// on every framework and workload, then checks that the report has every
// row and column, a positive number in each cell that applies, and
// answers checked on every framework, and that -profile left both sides'
// profiles of each measurement.
func TestQuickRunReportsEverything(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the go command is not on PATH; CI must have it to build muxbench")
		}
		t.Skip("the go command is not on PATH, so muxbench is not built here (CI=true makes this a failure)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "muxbench")
	if out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var stdout, stderr bytes.Buffer
	profiles := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, "-quick", "-profile", profiles)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("muxbench -quick: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("muxbench -quick took %v", time.Since(start).Round(time.Millisecond))
	report := stdout.String()

	rows := tableRows(report)
	for _, w := range workloads {
		for _, m := range w.metrics {
			if !m.optional {
				checkRow(t, rows, w, m)
			}
		}
		for _, m := range costMetrics {
			checkRow(t, rows, w, m)
		}
	}
	for _, f := range frameworks {
		re := regexp.MustCompile(`(?m)^- ` + regexp.QuoteMeta(f.name) + `: (\d+) answer bytes checked in (\d+) measurements`)
		got := re.FindStringSubmatch(report)
		if got == nil || got[1] == "0" || got[2] == "0" {
			t.Errorf("no answers checked on %s: %q", f.name, got)
		}
	}
	for _, want := range []string{"CPU: ", "Go: go", "gRPC-Go v1.85.0", "DRPC v1.0.0", "above 1 means muxrpc-native is better", "serialised"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	for _, w := range []string{"W1", "W4"} {
		for _, f := range frameworks {
			for _, file := range []string{"server-cpu", "server-allocs", "client-cpu", "client-allocs"} {
				name := filepath.Join(profiles, w+"-"+f.name+"-"+file+".pprof")
				if b, err := os.ReadFile(name); err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
					t.Errorf("-profile: %s is not a gzipped profile (%d bytes, %v)", name, len(b), err)
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}

// tableRows returns the cells of the report's table rows, by their first
// two cells ("W1 unary 64 B, 1 caller|calls/s"), each row once per table.
func tableRows(report string) map[string][][]string {
	rows := map[string][][]string{}
	for line := range strings.Lines(report) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "| W") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) >= 2 {
			key := cells[0] + "|" + cells[1]
			rows[key] = append(rows[key], cells[2:])
		}
	}
	return rows
}

// checkRow checks the row of workload w and metric m: a positive number
// (or, for a mayBeZero metric, a number not below 0) in each framework's
// cell where w applies, n/a elsewhere, and a ratio in each ratio column.
func checkRow(t *testing.T, rows map[string][][]string, w *workload, m metric) {
	t.Helper()
	key := fmt.Sprintf("%s %s|%s", w.name, w.about, m.label)
	found := rows[key]
	if len(found) == 0 {
		t.Errorf("no row %q", key)
		return
	}
	cells := found[0]
	if len(cells) != len(frameworks)+len(ratioColumns) {
		t.Errorf("row %q has %d cells, want %d: %q", key, len(cells), len(frameworks)+len(ratioColumns), cells)
		return
	}
	for i, f := range frameworks {
		c := cells[i]
		if w.applies(f) != "" {
			if c != "n/a" {
				t.Errorf("row %q, %s: %q, want n/a", key, f.name, c)
			}
			continue
		}
		if v, err := leadingNumber(c); err != nil || v < 0 || v == 0 && !m.mayBeZero {
			t.Errorf("row %q, %s: %q, want a positive number", key, f.name, c)
		}
	}
	for i, rc := range ratioColumns {
		c := cells[len(frameworks)+i]
		if c == "n/a" || c == "∞" {
			continue
		}
		if v, err := leadingNumber(c); err != nil || v < 0 {
			t.Errorf("row %q, %s: %q, want a ratio", key, rc.heading, c)
		}
	}
}

// leadingNumber parses the median at the start of a cell.
func leadingNumber(cell string) (float64, error) {
	f, _, _ := strings.Cut(cell, " ")
	return strconv.ParseFloat(f, 64)
}
