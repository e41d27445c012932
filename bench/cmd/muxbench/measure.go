package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// A cost is what one side spent over a measured window: allocations, CPU,
// and the peaks of its heap and resident memory.
type cost struct {
	Mallocs    uint64 `json:"mallocs"`     // heap objects allocated
	AllocBytes uint64 `json:"alloc_bytes"` // heap bytes allocated
	CPU        int64  `json:"cpu_ns"`      // user and system CPU time, ns
	PeakHeap   uint64 `json:"peak_heap"`   // highest heap in use (HeapInuse), bytes
	PeakRSS    uint64 `json:"peak_rss"`    // highest resident set, bytes
}

// A window measures this process's cost from begin to end. Between the
// two a sampler reads the heap in use and the resident set every
// sampleEvery, without allocating, and the kernel's own peak of the
// resident set is reset at begin (Linux clear_refs) and read at end, so
// that a peak between samples counts too.
type window struct {
	start   runtime.MemStats
	cpu     int64
	stop    chan struct{}
	done    sync.WaitGroup
	mu      sync.Mutex
	heap    uint64
	rss     uint64
	metrics []metrics.Sample
	statm   *os.File
	buf     [128]byte

	cpuProfile *os.File // with -profile
}

// sampleEvery is the sampler's period.
const sampleEvery = 2 * time.Millisecond

// profilePrefix, when set (-profile), names the files into which a window
// writes this process's CPU profile and allocation profile:
// profilePrefix-cpu.pprof and profilePrefix-allocs.pprof.
var profilePrefix string

// beginWindow starts measuring.
func beginWindow() *window {
	w := &window{
		stop: make(chan struct{}),
		metrics: []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/unused:bytes"},
		},
	}
	w.statm, _ = os.Open("/proc/self/statm")
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM; best effort
	runtime.GC()                                          // a window starts from live data only
	w.sample()
	w.done.Add(1)
	go w.sampler()
	if profilePrefix != "" {
		w.startProfile()
	}
	runtime.ReadMemStats(&w.start)
	w.cpu = cpuTime()
	return w
}

// startProfile starts the CPU profile of the window and marks the start of
// its allocation profile; a profile that cannot be written is reported and
// left out, since the measurement stands without it.
func (w *window) startProfile() {
	f, err := os.Create(profilePrefix + "-cpu.pprof")
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "muxbench: profile:", err)
		return
	}
	w.cpuProfile = f
}

// endProfile stops the CPU profile and writes the allocation profile,
// which counts allocations since the process started: the children do
// little before their measurement.
func (w *window) endProfile() {
	if w.cpuProfile == nil {
		return
	}
	pprof.StopCPUProfile()
	w.cpuProfile.Close()
	f, err := os.Create(profilePrefix + "-allocs.pprof")
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "muxbench: profile:", err)
	}
}

// end stops measuring and returns the cost of the window.
func (w *window) end() cost {
	cpu := cpuTime()
	var now runtime.MemStats
	runtime.ReadMemStats(&now)
	close(w.stop)
	w.done.Wait()
	w.endProfile()
	w.sample()
	if w.statm != nil {
		w.statm.Close()
	}
	c := cost{
		Mallocs:    now.Mallocs - w.start.Mallocs,
		AllocBytes: now.TotalAlloc - w.start.TotalAlloc,
		CPU:        cpu - w.cpu,
		PeakHeap:   w.heap,
		PeakRSS:    max(w.rss, highWaterRSS()),
	}
	return c
}

func (w *window) sampler() {
	defer w.done.Done()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.sample()
		}
	}
}

// sample records the heap in use and the resident set, if higher.
func (w *window) sample() {
	w.mu.Lock()
	defer w.mu.Unlock()
	metrics.Read(w.metrics)
	w.heap = max(w.heap, w.metrics[0].Value.Uint64()+w.metrics[1].Value.Uint64())
	if w.statm == nil {
		return
	}
	n, err := w.statm.ReadAt(w.buf[:], 0)
	if n == 0 && err != nil {
		return
	}
	w.rss = max(w.rss, residentPages(w.buf[:n])*uint64(os.Getpagesize()))
}

// residentPages parses the second field of /proc/self/statm ("size
// resident shared ...", in pages) without allocating.
func residentPages(statm []byte) uint64 {
	_, rest, _ := bytes.Cut(statm, []byte{' '})
	var pages uint64
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		pages = pages*10 + uint64(c-'0')
	}
	return pages
}

// highWaterRSS returns the kernel's peak resident set of this process
// (VmHWM), or 0 if it is not known.
func highWaterRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			kb, _ := strconv.ParseUint(string(f[0]), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTime returns this process's user and system CPU time, in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
