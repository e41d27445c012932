package mux

// Benchmarks of the send schedule (writer.go):
//
//	BenchmarkSmallWrites      1 KiB writes on one stream, drained on the
//	                          other side: how well a streaming sender's
//	                          messages gather into batches (wsys/op).
//	BenchmarkLatencyUnderBulk a 64-byte call (open, request, response,
//	                          close) while bulk streams run flat out in
//	                          both directions on the same session; p50 and
//	                          p99 of the calls in µs, at normal and at high
//	                          priority.
//
//	go test -run '^$' -bench 'SmallWrites|LatencyUnderBulk' -count 3 ./mux/

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

const smallWrite = 1 << 10

func BenchmarkSmallWrites(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		c, s, e := tcpPair(b)
		benchSmallWrites(b, e, c, func() (io.Reader, error) { return s, nil })
	})
	for _, tr := range transports {
		b.Run(tr.String(), func(b *testing.B) {
			cs, ss, e := benchSessions(b, tr)
			st, err := cs.Open(context.Background())
			e.check(err)
			defer st.Close()
			benchSmallWrites(b, e, st, func() (io.Reader, error) {
				return ss.Accept(context.Background())
			})
		})
	}
}

func benchSmallWrites(b *testing.B, e *benchEnv, w io.Writer, accept func() (io.Reader, error)) {
	b.ReportAllocs()
	b.SetBytes(smallWrite)
	msg := bytesOf('m', smallWrite)
	target := int64(b.N) * smallWrite
	var got atomic.Int64
	done := make(chan struct{})
	e.goFn(func() {
		r, err := accept()
		if err != nil {
			e.fail(fmt.Errorf("accept: %w", err))
			return
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if total := got.Add(int64(n)); total >= target && total-int64(n) < target {
				close(done)
			}
			if err != nil {
				if got.Load() < target {
					e.fail(fmt.Errorf("reader: %w after %d of %d bytes", err, got.Load(), target))
				}
				return
			}
		}
	})
	sys := sampleSyscalls()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w.Write(msg); err != nil {
			e.check(err)
		}
	}
	select {
	case <-done:
	case <-e.dead:
	}
	b.StopTimer()
	sys.report(b)
	e.check(nil)
}

// typeBulk is the stream type of the bulk streams in
// BenchmarkLatencyUnderBulk; their server side echoes nothing but sends
// bulk of its own while it drains the client's.
const typeBulk StreamType = 9

func BenchmarkLatencyUnderBulk(b *testing.B) {
	cases := []struct {
		name string
		bulk int
		prio Priority
	}{
		{"idle", 0, PriorityNormal},
		{"bulk=1", 1, PriorityNormal},
		{"bulk=8", 8, PriorityNormal},
		{"bulk=8/high", 8, PriorityHigh},
	}
	for _, tr := range transports {
		for _, c := range cases {
			b.Run(tr.String()+"/"+c.name, func(b *testing.B) {
				benchLatencyUnderBulk(b, tr, c.bulk, c.prio)
			})
		}
	}
}

func benchLatencyUnderBulk(b *testing.B, tr Transport, bulk int, prio Priority) {
	cs, ss, e := benchSessions(b, tr)
	ctx := context.Background()
	// The server answers calls at the priority the request's first byte
	// names, as the rpc layer does from its call header.
	ss.HandleType(TypeDefault, func(st *Stream) {
		defer st.Close()
		req := make([]byte, msgSize)
		if err := readFullStream(st, req); err != nil {
			return
		}
		st.SetPriority(Priority(int8(req[0] - 'q')))
		st.WriteLast(benchResp)
	})
	ss.HandleType(typeBulk, func(st *Stream) {
		defer st.Close()
		go io.Copy(io.Discard, st)
		for {
			if _, err := st.Write(benchChunk); err != nil {
				return
			}
		}
	})
	for range bulk {
		st, err := cs.OpenType(ctx, typeBulk)
		e.check(err)
		defer st.Close()
		e.goFn(func() { io.Copy(io.Discard, st) })
		e.goFn(func() {
			for {
				if _, err := st.Write(benchChunk); err != nil {
					return
				}
			}
		})
	}
	req := bytesOf('q'+byte(prio), msgSize)
	resp := make([]byte, msgSize)
	call := func() error {
		st, err := cs.Open(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		st.SetPriority(prio)
		if _, err := st.WriteLast(req); err != nil {
			return err
		}
		return readFullStream(st, resp)
	}
	for range 20 { // warm up, and let the bulk streams reach full speed
		e.check(call())
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := call(); err != nil {
			e.check(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	e.check(nil)
	slices.Sort(lat)
	us := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(us(0.5), "p50-µs")
	b.ReportMetric(us(0.99), "p99-µs")
}
