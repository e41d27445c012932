package rpc

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRapidResetCallsStayWithinMaxConcurrentCalls is a caller on the
// public mux API that opens a call, sends the whole request and ends it in
// one frame, and resets (on smux: closes) the stream at once, 100 times,
// against MaxConcurrentCalls(4): the handlers, which outlive the resets,
// never run more than 4 at once.
func TestRapidResetCallsStayWithinMaxConcurrentCalls(t *testing.T) {
	const limit, calls = 4, 100
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		var running, peak atomic.Int32
		srv := NewServer(MaxConcurrentCalls(limit), muxOpt(tr))
		srv.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(20 * time.Millisecond) // work that ignores the cancellation
			return in, nil
		}})
		addr := serve(t, srv)
		ctx := testCtx(t, 20*time.Second)
		sess, err := mux.Dial(ctx, "tcp", addr, &mux.Config{Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Kill()
		if err := sendHello(ctx, sess); err != nil {
			t.Fatal(err)
		}
		b := appendCallHeader(nil, "/test.Echo/Unary", 0, 0, nil, "")
		b, _ = appendMessage(b, wrapperspb.String("x"), DefaultMaxSendMsgSize)
		b = appendEmptyPart(b, partClientEnd)
		for i := range calls {
			st, err := sess.OpenType(ctx, StreamType)
			if err != nil {
				t.Fatalf("open %d: %v", i, err)
			}
			// Past the limit the attacker should be refused; on smux, past
			// the refusals the session waits to send, its stream is closed.
			if _, err := st.WriteLast(b); err != nil && !mux.IsRetrySafe(err) && !(tr == mux.Smux && errors.Is(err, io.EOF)) {
				t.Fatalf("write %d: %v", i, err)
			}
			if tr == mux.Smux {
				st.Close()
			} else {
				st.Reset(resetCanceled)
			}
		}
		time.Sleep(100 * time.Millisecond)
		eventually(t, 5*time.Second, "the handlers to return", func() bool { return running.Load() == 0 })
		if p := peak.Load(); p > limit {
			t.Fatalf("%d handlers ran at once, MaxConcurrentCalls %d", p, limit)
		}
	})
}

// stallingProxy forwards one connection between a client and target, and
// on stall stops reading what the client sends, so that the client's
// connection congests.
type stallingProxy struct {
	ln      net.Listener
	target  string
	stalled chan struct{}
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, target: target, stalled: make(chan struct{}), closed: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		down, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			down.Close()
			return
		}
		down.(*net.TCPConn).SetReadBuffer(8 << 10)
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			io.Copy(down, up)
		}()
		buf := make([]byte, 4<<10)
		for {
			select {
			case <-p.stalled:
				<-p.closed // never reads again
				return
			default:
			}
			n, err := down.Read(buf)
			if n > 0 {
				up.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *stallingProxy) stall() { p.once.Do(func() { close(p.stalled) }) }

func (p *stallingProxy) close() {
	select {
	case <-p.closed:
		return
	default:
		close(p.closed)
	}
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// TestCallsEndAtDeadlineOnCongestedConnection makes 64 calls with large
// requests and a deadline of 500 ms over a connection whose other end has
// stopped reading: every call ends with DeadlineExceeded soon after its
// deadline, however full the connection is.
func TestCallsEndAtDeadlineOnCongestedConnection(t *testing.T) {
	const calls = 64
	srv := NewServer()
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	addr := serve(t, srv)
	proxy := newStallingProxy(t, addr)
	peer := dial(t, proxy.ln.Addr().String(), MuxConfig(&mux.Config{KeepAliveInterval: -1, CloseTimeout: 100 * time.Millisecond}))
	peer.Session().Conn().(*net.TCPConn).SetWriteBuffer(8 << 10)
	checkEcho(t, testCtx(t, 5*time.Second), peer, "server")
	proxy.stall()
	big := wrapperspb.String(string(make([]byte, 1<<20)))
	var wg sync.WaitGroup
	var late atomic.Int32
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := echoClient{peer}.Unary(ctx, big)
			if time.Since(start) > 2*time.Second {
				late.Add(1)
			}
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("call over a congested connection: got %v, want DeadlineExceeded", err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		peer.Session().Kill() // unblocks them, for the leak check
		<-done
		t.Fatal("calls with a 500 ms deadline still running after 5 s")
	}
	if n := late.Load(); n > 0 {
		t.Fatalf("%d of %d calls ended more than 1.5 s after their deadline", n, calls)
	}
	peer.Session().Kill()
	proxy.close()
	proxy.wg.Wait()
}
