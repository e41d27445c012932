package mux

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestStreamsRacingAGracefulCloseFailRetrySafe has a server Close its
// session gracefully while the client, which has not read the server's
// GoAway yet, nor the answer of a stream the server finished before it,
// opens new streams. The server has half-closed the connection to linger
// by then, so it cannot refuse them with RESETs, and the client's writes
// may fail as the connection ends. What the server sent before its end
// still proves what it did: the finished stream completes with its
// answer, and every later stream fails as never processed (ErrRefused),
// the GoAway's Last-Stream-ID excluding it, whatever failed first, the
// client's writes or the connection.
func TestStreamsRacingAGracefulCloseFailRetrySafe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := <-accepted
	if conn == nil {
		t.Fatal("accept failed")
	}
	gated := &gatedConn{Conn: raw}
	cfg := &Config{KeepAliveInterval: -1}
	type result struct {
		s   *Session
		err error
	}
	server := make(chan result, 1)
	go func() {
		s, err := Server(conn, cfg)
		server <- result{s, err}
	}()
	c, err := Client(gated, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := <-server
	if r.err != nil {
		c.Kill()
		t.Fatal(r.err)
	}
	s := r.s
	t.Cleanup(func() {
		gated.mu.Lock()
		if gated.gate != nil {
			close(gated.gate)
			gated.gate = nil
		}
		gated.mu.Unlock()
		c.Kill()
		s.Kill()
	})
	serveEcho(t, s)
	ctx := testCtx(t, 10*time.Second)

	// Park the client's reader at the gate: from then on it reads nothing
	// until the gate opens.
	gated.shut()
	go s.Ping(ctx) // to wake a Read begun before the gate shut
	<-gated.parked

	finished, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := finished.WriteLast([]byte("answer me")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to finish the first stream", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.lastPeerID == finished.ID() && s.numLive+s.numOut == 0
	})

	closed := make(chan struct{})
	go func() {
		defer close(closed)
		s.Close()
	}()
	waitFor(t, "the server to linger", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closeErr != nil
	})
	time.Sleep(20 * time.Millisecond) // its CloseWrite done

	var late []*Stream
	for range 8 {
		st, err := c.Open(ctx)
		if err != nil {
			if !IsRetrySafe(err) {
				t.Fatalf("Open as the session ends: %v, want a retry-safe error", err)
			}
			continue
		}
		if _, err := st.WriteLast([]byte("too late")); err != nil && !IsRetrySafe(err) {
			t.Fatalf("write of a stream opened as the session ends: %v", err)
		}
		late = append(late, st)
		time.Sleep(5 * time.Millisecond)
	}
	gated.open()

	finished.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(finished); err != nil || string(got) != "answer me" {
		t.Errorf("stream the server finished before its GoAway: %q, %v; want its answer", got, err)
	}
	for _, st := range late {
		st.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := st.Read(make([]byte, 1))
		if !IsRetrySafe(err) || !errors.Is(err, ErrRefused) {
			t.Errorf("stream %d, opened after the server's GoAway: %v, want a retry-safe error", st.ID(), err)
		}
	}
	<-closed
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client session did not end after the server's")
	}
}

// TestRefusalsForAGoAwayFollowIt has a raw peer open streams as fast as
// it can while the session sends its GoAway, by GoAway or by Close: a
// RESET(REFUSED) the session sends because of its GoAway, or of Close,
// must reach the peer after the GOAWAY, whose Last-Stream-ID excludes the
// stream. A refusal read first looks like one of a session that lives on
// (over its limit, say), to which a client sends the request again,
// instead of moving it elsewhere at once.
func TestRefusalsForAGoAwayFollowIt(t *testing.T) {
	for i := range 40 {
		byClose := i%2 == 1
		p, s := rawClientOf(t, &Config{KeepAliveInterval: -1, CloseTimeout: 50 * time.Millisecond})
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for id := uint32(1); id < 400; id += 2 {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := p.conn.Write(openFrame(id, TypeDefault, []byte("x"), true)); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		closed := make(chan struct{})
		if byClose {
			go func() {
				defer close(closed)
				s.Close()
			}()
		} else {
			close(closed)
			if err := s.GoAway(GoAwayNormal, nil); err != nil {
				t.Fatal(err)
			}
		}
		var refused []uint32
		for {
			h, payload, err := p.readFrame()
			if err != nil {
				t.Fatalf("reading until the GOAWAY: %v", err)
			}
			if h.typ == frameReset && binary.BigEndian.Uint32(payload) == ResetRefused {
				refused = append(refused, h.streamID)
			}
			if h.typ != frameGoAway {
				continue
			}
			last := binary.BigEndian.Uint32(payload)
			for _, id := range refused {
				if id > last {
					t.Errorf("round %d (close %v): RESET(REFUSED) of stream %d before the GOAWAY with Last-Stream-ID %d", i, byClose, id, last)
				}
			}
			break
		}
		close(stop)
		<-sent
		p.conn.Close()
		<-closed
		s.Kill()
	}
}
