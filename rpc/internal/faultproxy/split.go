package faultproxy

import "math/rand/v2"

// A Splitter chooses where the proxy cuts the bytes of one direction of one
// connection. The proxy calls Next with the bytes it has read and not yet
// written, and writes as many as Next returns as one piece (at least 1, at
// most len(pending): values outside are clamped), then calls Next with the
// rest, and so on: Next sees every byte of the direction once, in order,
// as the first bytes of pending, so a Splitter that follows a protocol can
// keep its parser's state across calls. It must not keep pending.
type Splitter interface {
	Next(pending []byte) int
}

// SplitFunc is a Splitter that is a function.
type SplitFunc func(pending []byte) int

// Next returns f(pending).
func (f SplitFunc) Next(pending []byte) int { return f(pending) }

// Every returns Splitters that cut every n bytes of what was read: with n
// 1, the bytes go one at a time.
func Every(n int) func() Splitter {
	return func() Splitter { return SplitFunc(func([]byte) int { return n }) }
}

// Random returns Splitters that cut pieces of random sizes from 1 to
// maxSize bytes, each Splitter from its own source seeded by seed and a
// counter, so that a run with the same seed cuts the same first
// connection's directions alike.
func Random(seed uint64, maxSize int) func() Splitter {
	var n uint64
	return func() Splitter {
		n++
		r := rand.New(rand.NewPCG(seed, n))
		return SplitFunc(func([]byte) int { return 1 + r.IntN(maxSize) })
	}
}
