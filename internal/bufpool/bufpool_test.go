package bufpool

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClassesServeTheirSizes checks that a buffer put back is served to a
// request of its class and no larger one, that buffers outside the classes
// are never pooled, and that Get never allocates.
func TestClassesServeTheirSizes(t *testing.T) {
	p := New(10, 12)
	for _, c := range []struct{ n, class, capacity int }{
		{0, 10, 1024}, {1024, 10, 1024}, {1025, 11, 2048}, {4096, 12, 4096}, {4097, 13, 4097},
	} {
		if got := p.Class(c.n); got != c.class {
			t.Errorf("Class(%d) = %d, want %d", c.n, got, c.class)
		}
		if got := p.ClassCap(c.n); got != c.capacity {
			t.Errorf("ClassCap(%d) = %d, want %d", c.n, got, c.capacity)
		}
	}
	// sync.Pool may drop what is put (it does at random under the race
	// detector): so try a few times, and check what comes back.
	served := false
	for range 100 {
		b := make([]byte, 5, 3000) // serves class 11 (2 KiB), not class 12
		p.Put(&b)
		if bp := p.Get(3000); bp != nil {
			t.Fatalf("a 3000-byte request got a buffer of %d bytes", cap(*bp))
		}
		if bp := p.Get(2000); bp != nil {
			if len(*bp) != 0 || cap(*bp) != 3000 {
				t.Fatalf("a 2000-byte request got len %d cap %d, want the 3000-byte buffer put back empty", len(*bp), cap(*bp))
			}
			served = true
			break
		}
	}
	if !served {
		t.Error("a buffer put back never served a request of its class")
	}
	small, huge := make([]byte, 0, 512), make([]byte, 0, 8192)
	p.Put(&small)
	p.Put(&huge)
	if bp := p.Get(8192); bp != nil {
		t.Errorf("a request past the largest class got %d bytes", cap(*bp))
	}
	if bp := p.Get(100); bp != nil && cap(*bp) < 1024 {
		t.Errorf("a buffer under the smallest class was pooled: %d bytes", cap(*bp))
	}
	if n := testing.AllocsPerRun(100, func() { p.Get(4096) }); n != 0 {
		t.Errorf("Get allocated %v times", n)
	}
}
