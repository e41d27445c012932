package rpc

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"google.golang.org/grpc/stats"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // registers "gzip", as a program that compresses would
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// counting wraps a compressor and counts what it compresses and
// decompresses, so that a test can tell the messages went compressed.
type counting struct {
	encoding.Compressor
	name                  string
	compressed, inflated  atomic.Int64 // messages
	plainIn, compressedIn atomic.Int64 // bytes given to Compress and produced by it
}

func (c *counting) Name() string { return c.name }

func (c *counting) Compress(w io.Writer) (io.WriteCloser, error) {
	c.compressed.Add(1)
	cw := &countWriter{w: w}
	zw, err := c.Compressor.Compress(cw)
	if err != nil {
		return nil, err
	}
	return &countingWriteCloser{WriteCloser: zw, c: c, cw: cw}, nil
}

func (c *counting) Decompress(r io.Reader) (io.Reader, error) {
	c.inflated.Add(1)
	return c.Compressor.Decompress(r)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.w.Write(p)
}

type countingWriteCloser struct {
	io.WriteCloser
	c  *counting
	cw *countWriter
}

func (w *countingWriteCloser) Write(p []byte) (int, error) {
	w.c.plainIn.Add(int64(len(p)))
	return w.WriteCloser.Write(p)
}

func (w *countingWriteCloser) Close() error {
	err := w.WriteCloser.Close()
	w.c.compressedIn.Add(w.cw.n)
	return err
}

// zstdCompressor is zstd (github.com/klauspost/compress) as a program
// would register it: a compressor of its own, not one this package knows.
type zstdCompressor struct{}

func (zstdCompressor) Name() string { return "test-zstd" }

func (zstdCompressor) Compress(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) }

func (zstdCompressor) Decompress(r io.Reader) (io.Reader, error) {
	d, err := zstd.NewReader(r)
	if err != nil {
		return nil, err
	}
	return d.IOReadCloser(), nil
}

// deflate is compress/flate, another compressor a program registers.
type deflate struct{}

func (deflate) Name() string { return "test-deflate" }

func (deflate) Compress(w io.Writer) (io.WriteCloser, error) {
	return flate.NewWriter(w, flate.DefaultCompression)
}

func (deflate) Decompress(r io.Reader) (io.Reader, error) { return flate.NewReader(r), nil }

var (
	countingGzip = &counting{Compressor: encoding.GetCompressor("gzip"), name: "test-counting-gzip"}
	countingZstd = &counting{Compressor: zstdCompressor{}, name: "test-counting-zstd"}
)

func init() {
	encoding.RegisterCompressor(countingGzip)
	encoding.RegisterCompressor(countingZstd)
	encoding.RegisterCompressor(deflate{})
}

// TestCompressedCalls makes calls of the four kinds with compressed
// messages, both ways of a session, and checks that each message went
// compressed both ways and arrived whole.
func TestCompressedCalls(t *testing.T) {
	big := strings.Repeat("compressible ", 10000) // 130 KB that compress to little
	for _, comp := range []*counting{countingGzip, countingZstd} {
		t.Run(comp.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr mux.Transport) {
				peers := make(chan *Peer, 1)
				srv := NewServer(muxOpt(tr), OnPeer(func(p *Peer) { peers <- p }))
				srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
				callbacks := NewServer()
				callbacks.RegisterService(&echoDesc, &echoImpl{name: "client"})
				p := dial(t, serve(t, srv), muxOpt(tr), WithServices(callbacks))
				back := await(t, peers, 10*time.Second, "the server's peer")
				ctx := testCtx(t, 20*time.Second)
				for _, side := range []struct {
					name string
					cc   ClientConnInterface
					who  string
				}{{"client to server", p, "server"}, {"server to client", back, "client"}} {
					before, beforeInflated := comp.compressed.Load(), comp.inflated.Load()
					plainBefore, compressedBefore := comp.plainIn.Load(), comp.compressedIn.Load()
					ec := echoClient{side.cc}
					opt := UseCompressor(comp.name)
					out, err := ec.Unary(ctx, wrapperspb.String(big), opt)
					if err != nil || out.Value != side.who+":"+big {
						t.Fatalf("%s: unary: %v", side.name, err)
					}
					ss, err := ec.ServerStream(ctx, wrapperspb.String("s"), opt)
					if err != nil {
						t.Fatal(err)
					}
					for range 3 {
						if m, err := ss.Recv(); err != nil || m.Value != side.who+":s" {
							t.Fatalf("%s: server stream: %v %v", side.name, m, err)
						}
					}
					if _, err := ss.Recv(); err != io.EOF {
						t.Fatalf("%s: server stream end: %v", side.name, err)
					}
					cs, err := ec.ClientStream(ctx, opt)
					if err != nil {
						t.Fatal(err)
					}
					cs.Send(wrapperspb.String("a"))
					cs.Send(wrapperspb.String("b"))
					if m, err := cs.CloseAndRecv(); err != nil || m.Value != side.who+":a,b" {
						t.Fatalf("%s: client stream: %v %v", side.name, m, err)
					}
					bs, err := ec.Bidi(ctx, opt)
					if err != nil {
						t.Fatal(err)
					}
					for _, m := range []string{"x", big} {
						bs.Send(wrapperspb.String(m))
						if got, err := bs.Recv(); err != nil || got.Value != side.who+":"+m {
							t.Fatalf("%s: bidi: %v", side.name, err)
						}
					}
					bs.CloseSend()
					if _, err := bs.Recv(); err != io.EOF {
						t.Fatalf("%s: bidi end: %v", side.name, err)
					}
					// Requests: 1 + 1 + 2 + 2; answers: 1 + 3 + 1 + 2.
					if n := comp.compressed.Load() - before; n != 13 {
						t.Errorf("%s: %d messages compressed, want 13", side.name, n)
					}
					if n := comp.inflated.Load() - beforeInflated; n != 13 {
						t.Errorf("%s: %d messages decompressed, want 13", side.name, n)
					}
					plain, compressed := comp.plainIn.Load()-plainBefore, comp.compressedIn.Load()-compressedBefore
					if compressed*10 > plain {
						t.Errorf("%s: %d bytes compressed to %d", side.name, plain, compressed)
					}
				}
			})
		})
	}
}

// TestCompressionRefusals: a compressor the caller has not fails the call
// before it is sent, one the callee has not fails it with Unimplemented
// before the handler runs; identity is no compression, and any
// compressor a program registers works.
func TestCompressionRefusals(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		p := dial(t, serve(t, srv), muxOpt(tr))
		ctx := testCtx(t, 10*time.Second)
		ec := echoClient{p}

		// A compressor this side has not: the call fails before it is sent.
		_, err := ec.Unary(ctx, wrapperspb.String("x"), UseCompressor("no-such-compressor"))
		wantStatus(t, err, codes.Internal, `"no-such-compressor" is not installed`)

		// identity and "" are no compression.
		for _, name := range []string{"identity", ""} {
			if out, err := ec.Unary(ctx, wrapperspb.String("x"), UseCompressor(name)); err != nil || out.Value != "server:x" {
				t.Errorf("UseCompressor(%q): %v", name, err)
			}
		}
		if out, err := ec.Unary(ctx, wrapperspb.String("x"), UseCompressor("test-deflate")); err != nil || out.Value != "server:x" {
			t.Errorf("a registered deflate: %v", err)
		}

		// A callee without the caller's compressor answers Unimplemented,
		// before its handler runs: a raw call names one it has not.
		st, err := p.Session().OpenType(ctx, StreamType)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		msg, _ := appendMessage(nil, wrapperspb.String("x"), 1<<20)
		msg[0] = partMessage | partCompressed
		b := appendCallHeader(nil, "/test.Echo/Unary", 0, mux.PriorityNormal, nil, "only-the-caller-has-it")
		b = appendEmptyPart(append(b, msg...), partClientEnd)
		if _, err := st.WriteLast(b); err != nil {
			t.Fatal(err)
		}
		r := partReader{st: st, maxMsg: 1 << 20}
		defer r.release()
		kind, payload, err := r.next()
		if err != nil || kind != partTrailer {
			t.Fatalf("answer: kind %d, %v", kind, err)
		}
		trl, err := parseTrailer(payload)
		if err != nil || trl.code != codes.Unimplemented || !strings.Contains(trl.message, `"only-the-caller-has-it"`) {
			t.Fatalf("trailer %+v, %v; want Unimplemented naming the compressor", trl, err)
		}
	})
}

// TestCompressionBomb sends messages that inflate far past the receiver's
// limit, both ways, and checks that each fails with ResourceExhausted
// (what that costs the receiver: TestInflateCostsAtMostTheLimit).
func TestCompressionBomb(t *testing.T) {
	const limit = 1 << 20
	bomb := strings.Repeat("\x00", 16<<20) // 16 MiB that gzip makes 16 KiB of
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		// The callee's side: a request that inflates past its limit.
		srv := NewServer(muxOpt(tr), MaxRecvMsgSize(limit))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		p := dial(t, serve(t, srv), muxOpt(tr), MaxSendMsgSize(32<<20))
		ctx := testCtx(t, 60*time.Second)
		_, err := echoClient{p}.Unary(ctx, wrapperspb.String(bomb), UseCompressor("gzip"))
		wantStatus(t, err, codes.ResourceExhausted, "after decompression larger than max")

		// The caller's side: an answer that inflates past its limit.
		srv2 := NewServer(muxOpt(tr), MaxSendMsgSize(32<<20))
		srv2.RegisterService(&echoDesc, &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			return wrapperspb.String(bomb), nil
		}})
		p2 := dial(t, serve(t, srv2), muxOpt(tr), MaxRecvMsgSize(limit))
		_, err = echoClient{p2}.Unary(ctx, wrapperspb.String("x"), UseCompressor("gzip"))
		wantStatus(t, err, codes.ResourceExhausted, "after decompression larger than max")
	})
}

// TestInflateCostsAtMostTheLimit decompresses a bomb with a reader of a
// small limit and checks what that costs: the limit, not the message.
func TestInflateCostsAtMostTheLimit(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := encoding.GetCompressor("gzip").Compress(&buf)
	zw.Write(make([]byte, 16<<20))
	zw.Close()
	r := partReader{maxMsg: 256 << 10, decomp: encoding.GetCompressor("gzip")}
	compressed := buf.Bytes()
	var m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m1)
	_, err := r.inflate(compressed)
	runtime.ReadMemStats(&m2)
	r.release()
	var tooLarge *errTooLarge
	if !errors.As(err, &tooLarge) || !tooLarge.decompressed {
		t.Fatalf("inflate: %v, want a message too large after decompression", err)
	}
	got := m2.TotalAlloc - m1.TotalAlloc
	t.Logf("inflating a 16 MiB bomb with a 256 KiB limit allocated %d bytes", got)
	if got > 4<<20 {
		t.Errorf("inflating a 16 MiB bomb with a 256 KiB limit allocated %d bytes", got)
	}
}

// TestCompressedCallStats checks what stats handlers learn of a
// compressed call: the compressor's name in the headers, and payloads
// whose compressed and wire lengths are the compressed ones, smaller than
// the encoded length, on both sides and for unary and streaming calls.
func TestCompressedCallStats(t *testing.T) {
	big := strings.Repeat("compressible ", 1000)
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		srvRec, cliRec := new(recorder), new(recorder)
		srv := NewServer(muxOpt(tr), WithStatsHandler(srvRec))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		p := dial(t, serve(t, srv), muxOpt(tr), WithStatsHandler(cliRec))
		ctx := testCtx(t, 10*time.Second)
		if _, err := (echoClient{p}).Unary(ctx, wrapperspb.String(big), UseCompressor("gzip")); err != nil {
			t.Fatal(err)
		}
		bs, err := echoClient{p}.Bidi(ctx, UseCompressor("gzip"))
		if err != nil {
			t.Fatal(err)
		}
		bs.Send(wrapperspb.String(big))
		if _, err := bs.Recv(); err != nil {
			t.Fatal(err)
		}
		bs.CloseSend()
		if _, err := bs.Recv(); err != io.EOF {
			t.Fatal(err)
		}
		for _, method := range []string{"/test.Echo/Unary", "/test.Echo/Bidi"} {
			for _, side := range []struct {
				name   string
				rec    *recorder
				client bool
			}{{"caller", cliRec, true}, {"callee", srvRec, false}} {
				c := side.rec.call(t, method, side.client)
				what := side.name + " " + method
				for _, h := range eventsOf[*stats.OutHeader](side.rec, c) {
					if h.Compression != "gzip" {
						t.Errorf("%s: OutHeader.Compression %q, want gzip", what, h.Compression)
					}
				}
				for _, h := range eventsOf[*stats.InHeader](side.rec, c) {
					if h.Compression != "gzip" {
						t.Errorf("%s: InHeader.Compression %q, want gzip", what, h.Compression)
					}
				}
				outs, ins := eventsOf[*stats.OutPayload](side.rec, c), eventsOf[*stats.InPayload](side.rec, c)
				if len(outs) != 1 || len(ins) != 1 {
					t.Fatalf("%s: %d OutPayloads and %d InPayloads, want 1 each", what, len(outs), len(ins))
				}
				for _, pl := range []struct{ length, compressed, wire int }{
					{outs[0].Length, outs[0].CompressedLength, outs[0].WireLength},
					{ins[0].Length, ins[0].CompressedLength, ins[0].WireLength},
				} {
					if pl.length < len(big) || pl.compressed*5 > pl.length || pl.wire != pl.compressed+partPrefixLen {
						t.Errorf("%s: payload Length %d, CompressedLength %d, WireLength %d", what, pl.length, pl.compressed, pl.wire)
					}
				}
			}
		}
	})
}
