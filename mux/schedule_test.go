package mux

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// scheduleState is what the send path holds at one moment.
type scheduleState struct {
	flusher flusher
	batch   int // bytes in the open batch
	waiting []*Stream
}

func (s *Session) scheduleState() scheduleState {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return scheduleState{s.flusher, len(s.wbuf), append([]*Stream(nil), s.turnWaiters...)}
}

// waitSchedule polls the send path until cond holds, failing the test
// after d.
func waitSchedule(t *testing.T, s *Session, d time.Duration, what string, cond func(scheduleState) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond(s.scheduleState()) {
		if time.Now().After(deadline) {
			t.Fatalf("send path never reached: %s (now %+v)", what, s.scheduleState())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPriorityOrdersWaitingWrites congests a connection with bulk streams
// of low priority until writers wait for turns, then writes a frame's
// worth on a stream of normal priority and, after it, on one of high
// priority, neither of which fits the open batch. The high-priority
// message reaches the wire first, and the normal one comes before the bulk
// streams have had more than a round of turns.
func TestPriorityOrdersWaitingWrites(t *testing.T) {
	p, s := congestedSession(t, &Config{KeepAliveInterval: -1})
	ctx := testCtx(t, 20*time.Second)
	const bulkStreams, bulkSize = 4, 4 << 20
	var writers sync.WaitGroup
	defer writers.Wait()
	for range bulkStreams {
		st, err := s.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetPriority(PriorityLow)
		writers.Add(1)
		go func() {
			defer writers.Done()
			st.Write(bytes.Repeat([]byte{'b'}, bulkSize)) // fails at the end of the test
		}()
	}
	waitSchedule(t, s, 10*time.Second, "bulk writers waiting for turns", func(ss scheduleState) bool {
		return ss.flusher == flushLoop && len(ss.waiting) >= 2
	})

	msgSize := int(s.peer.maxFrameSize) - 5 // one frame, with the stream type
	small := func(prio Priority, msg string) *Stream {
		st, err := s.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.SetPriority(prio)
		writers.Add(1)
		go func() {
			defer writers.Done()
			st.Write(bytes.Repeat([]byte(msg[:1]), msgSize))
		}()
		waitSchedule(t, s, 5*time.Second, msg+" waiting for its turn", func(ss scheduleState) bool {
			for _, w := range ss.waiting {
				if w == st {
					return true
				}
			}
			return false
		})
		return st
	}
	// A batch without room for them makes the messages wait for turns.
	waitSchedule(t, s, 5*time.Second, "a full batch", func(ss scheduleState) bool {
		return ss.batch+msgSize > sendBufferLimit
	})
	normal := small(PriorityNormal, "normal")
	defer normal.Close()
	urgent := small(PriorityHigh, "urgent")
	defer urgent.Close()
	if w := s.scheduleState().waiting; w[0] != urgent || w[1] != normal {
		t.Fatalf("turn queue starts %p %p; want the urgent stream %p, then the normal one %p", w[0], w[1], urgent, normal)
	}

	// Now the peer reads: the frames leave in the order of the schedule.
	bulkBefore := 0 // bulk bytes after the urgent message, before the normal one
	var order []string
	for len(order) < 2 {
		h, payload := p.until("the small messages", func(h frameHeader, _ []byte) bool { return h.typ == frameData })
		if h.flags&flagOpen != 0 {
			payload = payload[1:] // the stream type
		}
		switch {
		case len(payload) > 0 && payload[0] != 'b':
			order = append(order, map[byte]string{'u': "urgent", 'n': "normal"}[payload[0]])
		case len(order) == 1:
			bulkBefore += len(payload)
		}
	}
	if order[0] != "urgent" || order[1] != "normal" {
		t.Fatalf("small messages left in the order %q; want the urgent one first", order)
	}
	// Between the two, at most the turns granted with the urgent one's
	// batch and one turn of each bulk stream ahead of the normal one.
	if limit := sendBufferLimit + bulkStreams*sendQuantum; bulkBefore > limit {
		t.Fatalf("%d bulk bytes went between the urgent and the normal message; want at most %d", bulkBefore, limit)
	}
	s.Kill()
}

// TestSetPriorityOnSmuxHasNoEffect checks that a stream of the Smux
// transport takes a priority without complaint and still carries data.
func TestSetPriorityOnSmuxHasNoEffect(t *testing.T) {
	cs, ss := pair(t, withTransport(nil, Smux), withTransport(nil, Smux))
	ctx := testCtx(t, 10*time.Second)
	st, err := cs.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetPriority(PriorityHigh)
	if _, err := st.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	in, err := ss.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	buf := make([]byte, 2)
	if err := readFullStream(in, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
}
