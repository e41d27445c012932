package grpcport_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcport"
	"google.golang.org/grpc/credentials/insecure"
)

// closedWithin fails the test unless the server closes conn within d,
// having sent nothing, or, for a connection the port handed to muxrpc,
// nothing but muxrpc's own preface and SETTINGS, which a native
// server sends at once, whatever comes (PROTOCOL.md, section 1.1).
func closedWithin(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	got, err := io.ReadAll(conn)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the connection was still open after %v (the server sent %q)", d, got)
	case len(got) > 0 && !strings.HasPrefix(string(got), "MUXRPC\x00\x01"):
		t.Fatalf("the server sent %q", got)
	}
}

func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestBadInputOnSharedPort sends what neither protocol speaks, or too
// little of it, and checks that each connection is answered or closed in
// time, while calls on the port go on.
func TestBadInputOnSharedPort(t *testing.T) {
	const timeout = 300 * time.Millisecond
	p := startPort(t, mux.Native, nil, grpcport.HandshakeTimeout(timeout))

	t.Run("silent", func(t *testing.T) {
		closedWithin(t, rawDial(t, p.addr), timeout+3*time.Second)
	})
	t.Run("part of HTTP/2's preface", func(t *testing.T) {
		conn := rawDial(t, p.addr)
		conn.Write([]byte("PRI * "))
		closedWithin(t, conn, timeout+3*time.Second)
	})
	t.Run("part of muxrpc's preface", func(t *testing.T) {
		conn := rawDial(t, p.addr)
		conn.Write([]byte("MUXR"))
		closedWithin(t, conn, timeout+3*time.Second)
	})
	t.Run("garbage", func(t *testing.T) {
		conn := rawDial(t, p.addr)
		conn.Write([]byte("\x00\xffgarbage that is no preface"))
		closedWithin(t, conn, 5*time.Second)
	})
	t.Run("TLS on a plaintext port", func(t *testing.T) {
		conn := rawDial(t, p.addr)
		conn.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
		closedWithin(t, conn, 5*time.Second)
	})
	t.Run("HTTP/1.1", func(t *testing.T) {
		conn := rawDial(t, p.addr)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no HTTP answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "muxrpc and gRPC") {
			t.Fatalf("answer %s %q", resp.Status, body)
		}
		closedWithin(t, conn, 5*time.Second)
	})
	t.Run("a muxrpc client's probe for HTTP/1.x", func(t *testing.T) {
		// mux.Dial asks a server that is silent for a moment with a
		// preface that ends a line (PROTOCOL.md, section 1.1): the port
		// takes it for muxrpc's, and answers with muxrpc's preface, not
		// with HTTP.
		conn := rawDial(t, p.addr)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("MUXRPC\x00\x01\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 8)
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "MUXRPC\x00\x01" {
			t.Fatalf("the port answered %q (%v), want muxrpc's preface", got, err)
		}
	})
	t.Run("calls go on beside silent connections", func(t *testing.T) {
		for range 50 {
			rawDial(t, p.addr)
		}
		cc := grpcDial(t, p.addr, insecure.NewCredentials())
		out := new(echov1.EchoResponse)
		start := time.Now()
		if err := cc.Invoke(ctxFor(t, 5*time.Second), echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "x"}, out); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > timeout {
			t.Errorf("the call took %v beside silent connections", d)
		}
	})
}

// wrappedListener hides the type of its connections, so that the port
// cannot peek at them and reads and replays their first bytes instead.
type wrappedListener struct{ net.Listener }

type wrappedConn struct{ net.Conn }

func (l wrappedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrappedConn{c}, nil
}

// TestReplayedPreface serves both protocols from a listener whose
// connections cannot be peeked at.
func TestReplayedPreface(t *testing.T) {
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, echo{})
	port := grpcport.New(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- port.Serve(wrappedListener{lis}) }()
	defer func() {
		port.GracefulStop()
		if err := <-done; !errors.Is(err, grpcport.ErrServerStopped) {
			t.Errorf("Serve: %v", err)
		}
	}()
	ctx := ctxFor(t, 10*time.Second)
	cc := grpcDial(t, lis.Addr().String(), insecure.NewCredentials())
	out := new(echov1.EchoResponse)
	if err := cc.Invoke(ctx, echov1.Echo_Unary_FullMethodName, &echov1.EchoRequest{Message: "g"}, out); err != nil {
		t.Fatalf("gRPC: %v", err)
	}
	mp, err := rpc.Dial(ctx, lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	if _, err := echov1.NewEchoClient(mp).Unary(ctx, &echov1.EchoRequest{Message: "m"}); err != nil {
		t.Fatalf("muxrpc: %v", err)
	}
}

// TestStopWhileConnecting stops ports while clients connect to them, so
// that a connection accepted as Stop begins must be counted before Stop
// waits for the connections being told apart, or closed (a race the
// interop tests found).
func TestStopWhileConnecting(t *testing.T) {
	for range 30 {
		port := grpcport.New(rpc.NewServer())
		lis := listen(t)
		done := make(chan error, 1)
		go func() { done <- port.Serve(lis) }()
		dialed := make(chan struct{})
		go func() {
			defer close(dialed)
			for range 5 {
				if c, err := net.DialTimeout("tcp", lis.Addr().String(), time.Second); err == nil {
					c.Write([]byte("MUXRPC\x00\x01"))
					c.Close()
				}
			}
		}()
		port.Stop()
		if err := <-done; !errors.Is(err, grpcport.ErrServerStopped) {
			t.Fatalf("Serve: %v", err)
		}
		<-dialed
	}
}
