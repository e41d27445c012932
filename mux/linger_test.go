package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestGracefulCloseLeavesNoUnreadInputToResetThePeer has a raw peer over
// loopback TCP make a call, leave the answer unread in its socket, and go
// on sending what a live peer sends after its last stream (window
// updates, here for that finished stream) while the session closes
// gracefully. A socket closed with input unread sends a TCP reset, which
// makes the peer's kernel discard the answer it has not read yet; the
// session must instead half-close and read what still comes, so that the
// peer reads the whole answer, the GOAWAY and then the end of the
// connection, never ECONNRESET.
func TestGracefulCloseLeavesNoUnreadInputToResetThePeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	hello := appendSettings(appendPreface(nil), settings{maxIncomingStreams: 8, initialWindow: 1 << 20, maxFrameSize: 1 << 14})
	if _, err := peer.Write(append(hello, openFrame(1, TypeDefault, []byte("request"), true)...)); err != nil {
		t.Fatal(err)
	}
	s, err := Server(conn, &Config{KeepAliveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Kill()

	answer := bytes.Repeat([]byte("answer. "), 32<<10) // 256 KiB, within the peer's window
	st, err := s.Accept(testCtx(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if req, err := io.ReadAll(st); err != nil || string(req) != "request" {
		t.Fatalf("request: %q, %v", req, err)
	}
	if _, err := st.Write(answer); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// The peer keeps talking for a while after the close begins, well
	// within lingerTimeout, and reads nothing until it has stopped.
	stopTalking := make(chan struct{})
	talked := make(chan struct{})
	go func() {
		defer close(talked)
		for {
			select {
			case <-stopTalking:
				return
			case <-time.After(time.Millisecond):
			}
			if _, err := peer.Write(windowFrame(1, 1)); err != nil {
				return
			}
		}
	}()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	time.Sleep(lingerTimeout / 3)
	close(stopTalking)
	<-talked

	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("the peer lost its unread input: after %d bytes: %v", len(got), err)
	}
	if !bytes.Contains(got, answer[:4096]) || len(got) < len(answer) {
		t.Fatalf("the peer read %d bytes, not the %d-byte answer", len(got), len(answer))
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := s.Err(); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("session error %v, want ErrSessionClosed", err)
	}
}
