package mux

import (
	"encoding/binary"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
)

// smuxFrame appends a smux frame.
func smuxFrame(b []byte, cmd byte, sid uint32, payload []byte) []byte {
	b = append(b, smuxVersion, cmd)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, sid)
	return append(b, payload...)
}

// smuxSettingsPayload is a settings stream's data, announcing limit.
func smuxSettingsPayload(limit uint64) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(nil, uint64(smuxSettingsType)), limit)
}

// smuxClientHello is what a muxrpc client over smux sends first: its
// settings stream, opened, written and closed.
func smuxClientHello(limit uint64) []byte {
	const sid = 3
	b := smuxFrame(nil, smuxSYN, sid, nil)
	b = smuxFrame(b, smuxPSH, sid, smuxSettingsPayload(limit))
	return smuxFrame(b, smuxFIN, sid, nil)
}

// TestSmuxSilentConnectionsAreNoSessions connects clients that never send
// a byte to a Smux Listener: none becomes a session, each is closed after
// the handshake timeout, and they cost a goroutine each at most, while a
// real client gets its session.
func TestSmuxSilentConnectionsAreNoSessions(t *testing.T) {
	const silent = 200
	const hsTimeout = 500 * time.Millisecond
	cfg := &Config{Transport: Smux, HandshakeTimeout: hsTimeout}
	l, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan *Session, silent+1)
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- s
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for s := range accepted {
			s.Kill()
		}
	})

	g0 := runtime.NumGoroutine()
	var peak int
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for {
			peak = max(peak, runtime.NumGoroutine()-g0)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	conns := dialSilent(t, l.Addr().String(), silent)
	for i, c := range conns {
		if !isClosedByPeer(c, hsTimeout+5*time.Second) {
			t.Fatalf("silent connection %d still open %v after it was made; HandshakeTimeout is %v", i, time.Since(start), hsTimeout)
		}
	}
	close(stop)
	sampling.Wait()
	if d := time.Since(start); d < hsTimeout {
		t.Errorf("the silent connections were closed after %v, before the handshake timeout of %v", d, hsTimeout)
	}
	if peak > silent+50 {
		t.Errorf("%d silent connections cost up to %d goroutines", silent, peak)
	}

	ctx := testCtx(t, 10*time.Second)
	c, err := Dial(ctx, "tcp", l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill() })
	select {
	case s := <-accepted:
		if s.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("a silent connection became a session (%v)", s.RemoteAddr())
		}
		serveEcho(t, s)
	case <-time.After(5 * time.Second):
		t.Fatal("the real client's session was not accepted")
	}
	if err := echo(ctx, c, []byte("a real client")); err != nil {
		t.Fatal(err)
	}
}

// TestHandlerClosingItsSessionReturns has a HandleType handler close its
// own session: Close returns, after at most its CloseTimeout, rather than
// wait for the handler that calls it.
func TestHandlerClosingItsSessionReturns(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			const closeTimeout = 200 * time.Millisecond
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{CloseTimeout: closeTimeout}, tr))
			closed := make(chan error, 1)
			s.HandleType(TypeDefault, func(st *Stream) {
				io.ReadFull(st, make([]byte, 1))
				closed <- s.Close()
			})
			st, err := c.Open(testCtx(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-closed:
				if err != nil {
					t.Fatalf("Close: %v", err)
				}
			case <-time.After(closeTimeout + 10*time.Second):
				t.Fatal("Session.Close called by a handler did not return")
			}
			if s.Err() == nil {
				t.Fatal("the session still runs after Close")
			}
		})
	}
}
