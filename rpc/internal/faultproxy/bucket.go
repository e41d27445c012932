package faultproxy

import (
	"sync"
	"time"
)

// bucket is a token bucket: tokens accrue at rate per second up to burst,
// and a write of n bytes takes n tokens. A write may take tokens the
// bucket does not have yet, and then waits until they would have accrued,
// so writers sharing a bucket are served in turn and together never exceed
// the rate (over any span, by more than burst).
type bucket struct {
	burst int // tokens the bucket holds when full; no write takes more

	mu     sync.Mutex
	rate   float64 // tokens per second
	tokens float64 // may be negative: taken ahead of time
	last   time.Time
}

func newBucket(rate, burst int) *bucket {
	return &bucket{burst: burst, rate: float64(rate), tokens: float64(burst), last: time.Now()}
}

// reserve takes n tokens, n at most burst, and returns how long the caller
// must wait before it uses them.
func (b *bucket) reserve(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(float64(b.burst), b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}
