package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
)

// machine describes where the run happened and what it ran.
func machine() []string {
	lines := []string{
		fmt.Sprintf("CPU: %s, %d cores (GOMAXPROCS %d), %s/%s", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH),
		"Go: " + runtime.Version(),
	}
	versions := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			versions[m.Path] = m.Version
			if m.Replace != nil && m.Replace.Version != "" {
				versions[m.Path] = m.Replace.Version
			}
		}
	}
	muxrpc := "this repository"
	if rev, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		muxrpc += " at " + strings.TrimSpace(string(rev))
	}
	lines = append(lines, fmt.Sprintf("Frameworks: muxrpc %s (smux %s); gRPC-Go %s; DRPC %s; protobuf %s",
		muxrpc, versions["github.com/xtaci/smux"], versions["google.golang.org/grpc"],
		versions["storj.io/drpc"], versions["google.golang.org/protobuf"]))
	return lines
}

// cpuModel returns the first model name in /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
