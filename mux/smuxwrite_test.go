package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestSmuxFailedWriteLeavesBufferAlone makes a Write on the Smux transport
// fail by its deadline while its frame waits behind a congested
// connection, then overwrites the buffer it passed: once the connection
// drains, what the peer receives of that Write (smux may still send a
// frame it had queued) is the bytes as they were at the Write, never the
// caller's later ones, and the race detector sees no read of the buffer
// after Write returned.
func TestSmuxFailedWriteLeavesBufferAlone(t *testing.T) {
	ka := &Config{Transport: Smux, KeepAliveInterval: -1}
	c, s, p := proxyPair(t, ka, ka)
	ctx := testCtx(t, 20*time.Second)
	bulk, bulkPeer := openAccepted(t, ctx, c, s, []byte("A"))
	st, peer := openAccepted(t, ctx, c, s, []byte("B"))
	for _, ps := range []*Stream{bulkPeer, peer} {
		if _, err := io.ReadFull(ps, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	c.Conn().(*net.TCPConn).SetWriteBuffer(8 << 10)

	// Congest the connection: the proxy stops forwarding, and a bulk write
	// fills the kernel's buffers, leaving smux's sender blocked.
	p.pause(toServer, true)
	bulkDone := make(chan error, 1)
	go func() {
		_, err := bulk.Write(make([]byte, 1<<20))
		bulkDone <- err
	}()
	time.Sleep(300 * time.Millisecond)

	buf := bytes.Repeat([]byte("b"), 4<<10)
	st.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := st.Write(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a Write behind a congested connection: %d, %v; want a deadline error", n, err)
	}
	for i := range buf {
		buf[i] = 'X' // the caller reuses its buffer, as rpc's pooled ones are
	}

	p.pause(toServer, false)
	go io.Copy(io.Discard, bulkPeer)
	if err := <-bulkDone; err != nil {
		t.Fatalf("the bulk write: %v", err)
	}
	peer.SetReadDeadline(time.Now().Add(time.Second))
	got, _ := io.ReadAll(peer) // whatever of the failed Write smux still sent
	if i := bytes.IndexByte(got, 'X'); i >= 0 {
		t.Fatalf("the peer got %d bytes of the failed Write, with the caller's later bytes from offset %d", len(got), i)
	}
	t.Logf("the peer got %d bytes of a Write that failed (%v)", len(got), err)
}
