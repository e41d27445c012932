package rpc

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// manyEntries returns metadata of n entries, each its own key.
func manyEntries(n int) metadata.MD {
	md := metadata.MD{}
	for i := range n {
		md[fmt.Sprintf("k%d", i)] = []string{"v"}
	}
	return md
}

// TestMetadataEntryLimit sends call headers, response headers and
// trailers with exactly maxMetadataEntries entries and with one more, in
// both directions of a session: the first arrive whole, the others fail
// the call with RESOURCE_EXHAUSTED (a call header's before its handler
// runs), and the session goes on.
func TestMetadataEntryLimit(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		var handled atomic.Int32
		impl := &funcEcho{unary: func(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			if in.Value == "ping" {
				return defaultEcho.Unary(ctx, in)
			}
			handled.Add(1)
			md, _ := metadata.FromIncomingContext(ctx)
			var n int
			fmt.Sscan(in.Value[1:], &n)
			switch in.Value[0] {
			case 'h':
				SetHeader(ctx, manyEntries(n))
			case 't':
				SetTrailer(ctx, manyEntries(n))
			}
			return wrapperspb.String(fmt.Sprint(md.Len())), nil
		}}
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, impl)
		callbacks := NewServer()
		callbacks.RegisterService(&echoDesc, impl)
		client := dial(t, serve(t, srv), WithServices(callbacks), muxOpt(tr))
		for _, dir := range []struct {
			name string
			cc   *Peer
		}{{"clientToServer", client}, {"serverToClient", onlyPeer(t, srv)}} {
			t.Run(dir.name, func(t *testing.T) {
				c := echoClient{dir.cc}
				// The call header.
				before := handled.Load()
				out, err := c.Unary(metadata.NewOutgoingContext(ctx, manyEntries(maxMetadataEntries)), wrapperspb.String("-0"))
				if err != nil || out.Value != fmt.Sprint(maxMetadataEntries) {
					t.Fatalf("a call header of %d entries: got %v, %v", maxMetadataEntries, out, err)
				}
				_, err = c.Unary(metadata.NewOutgoingContext(ctx, manyEntries(maxMetadataEntries+1)), wrapperspb.String("-0"))
				wantStatus(t, err, codes.ResourceExhausted, fmt.Sprintf("more than %d metadata entries", maxMetadataEntries))
				if n := handled.Load() - before; n != 1 {
					t.Fatalf("%d handlers ran, want 1: the call over the limit reached its handler", n)
				}
				// The response header and the trailer.
				for _, kind := range []string{"h", "t"} {
					var header, trailer metadata.MD
					_, err := c.Unary(ctx, wrapperspb.String(fmt.Sprint(kind, maxMetadataEntries)), Header(&header), Trailer(&trailer))
					if got := map[string]int{"h": header.Len(), "t": trailer.Len()}[kind]; err != nil || got != maxMetadataEntries {
						t.Fatalf("%s of %d entries: got %d entries, %v", kind, maxMetadataEntries, got, err)
					}
					_, err = c.Unary(ctx, wrapperspb.String(fmt.Sprint(kind, maxMetadataEntries+1)))
					wantStatus(t, err, codes.ResourceExhausted, fmt.Sprintf("more than %d metadata entries", maxMetadataEntries))
				}
				checkEcho(t, ctx, dir.cc, "server")
			})
		}
	})
}

// TestMetadataFloodCostsLittle sends a call header of 1 MiB, the header
// limit, made of one-letter-or-so keys (some 140 000 entries): the callee
// refuses it with RESOURCE_EXHAUSTED having allocated a few times the
// header's size, not the ~40 MiB that decoding every entry into strings
// and maps costs.
func TestMetadataFloodCostsLittle(t *testing.T) {
	const bound = 8 << 20
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		srv := NewServer(muxOpt(tr))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		p := dial(t, serve(t, srv), muxOpt(tr))

		b, start := beginPart(nil, partCallHeader)
		b = protowire.AppendTag(b, fieldCallMethod, protowire.BytesType)
		b = protowire.AppendString(b, "/test.Echo/Unary")
		const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_."
		entries := 0
		for ; len(b) < defaultMaxHeaderListSize-16; entries++ {
			var key []byte
			for i := entries; ; i /= len(alphabet) {
				key = append(key, alphabet[i%len(alphabet)])
				if i < len(alphabet) {
					break
				}
			}
			entry := protowire.AppendString(protowire.AppendTag(nil, fieldEntryKey, protowire.BytesType), string(key))
			b = protowire.AppendBytes(protowire.AppendTag(b, fieldCallMetadata, protowire.BytesType), entry)
		}
		header := endPart(b, start)
		msg, _ := appendMessage(nil, wrapperspb.String("x"), 1<<20)
		wire := rawParts(header, msg, appendEmptyPart(nil, partClientEnd))

		var tl trailer
		var err error
		allocated := allocatedDuring(func() { tl, err = rawCall(ctx, p, wire, false) })
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("a call header of %d bytes, %d entries: the call allocated %.1f MiB", len(header), entries, float64(allocated)/(1<<20))
		wantStatus(t, tl.err(), codes.ResourceExhausted, "metadata entries")
		if allocated > bound {
			t.Errorf("the call allocated %d MiB, want at most %d MiB", allocated>>20, bound>>20)
		}
		checkEcho(t, ctx, p, "server")
	})
}

// closedWithin reads c until it ends and reports whether the other side
// closed it within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return !isTimeout(err)
}

// TestMaxPendingHandshakesShedsOldest sets MaxPendingHandshakes to 4 on a
// Server with a long handshake timeout and opens silent connections: four
// are held, each further one makes the server close the oldest at once,
// a real client gets its session and its call through, and the option
// must not be negative.
func TestMaxPendingHandshakesShedsOldest(t *testing.T) {
	const limit = 4
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		ctx := testCtx(t, 30*time.Second)
		srv := NewServer(MuxConfig(&mux.Config{Transport: tr, MaxPendingHandshakes: limit, HandshakeTimeout: time.Minute}))
		srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
		addr := serve(t, srv)
		silent := func() net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		var conns []net.Conn
		for range limit {
			conns = append(conns, silent())
		}
		if closedWithin(conns[0], 300*time.Millisecond) {
			t.Fatalf("the server closed a pending handshake with only %d pending", limit)
		}
		for i := range 2 {
			conns = append(conns, silent())
			if !closedWithin(conns[i], 5*time.Second) {
				t.Fatalf("connection %d, the oldest pending, still open after connection %d", i, len(conns)-1)
			}
			if closedWithin(conns[i+1], 100*time.Millisecond) {
				t.Fatalf("connection %d was closed, not only the oldest", i+1)
			}
		}
		// A real client takes a handshake slot too, and goes through.
		checkEcho(t, ctx, dial(t, addr, muxOpt(tr)), "server")

		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		err = NewServer(MuxConfig(&mux.Config{Transport: tr, MaxPendingHandshakes: -1})).Serve(ln)
		if err == nil || !strings.Contains(err.Error(), "MaxPendingHandshakes") {
			t.Fatalf("Serve with a negative MaxPendingHandshakes: %v, want an error naming it", err)
		}
	})
}

// The table of limits in RELIABILITY.md against the code of the call
// layer; mux/limits_test.go checks the session layer's rows, and reads
// the table the same way.

// limitRow is one row of the table of limits.
type limitRow struct {
	name, layer, def, option string
}

// readLimitsTable returns the rows between the markers of the table of
// limits in RELIABILITY.md.
func readLimitsTable(t *testing.T) []limitRow {
	t.Helper()
	const begin, end = "<!-- limits:begin -->", "<!-- limits:end -->"
	doc, err := os.ReadFile("../RELIABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), begin)
	table, _, ok2 := strings.Cut(rest, end)
	if !ok || !ok2 {
		t.Fatal("RELIABILITY.md has no table of limits between its markers")
	}
	var rows []limitRow
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) >= 6 && cells[0] != "Limit" && !strings.HasPrefix(cells[0], "---") {
			rows = append(rows, limitRow{cells[0], cells[1], cells[2], cells[3]})
		}
	}
	return rows
}

// limitValue parses a Default cell: the value up to its first "(" or
// ";", a number with a unit, a product of such, "off" (0) or "none" (-1).
// Sizes are in bytes, durations in nanoseconds.
func limitValue(t *testing.T, cell string) int64 {
	t.Helper()
	s := strings.ReplaceAll(cell, "`", "")
	if i := strings.IndexAny(s, "(;"); i >= 0 {
		s = s[:i]
	}
	switch s = strings.TrimSpace(s); s {
	case "off":
		return 0
	case "none":
		return -1
	}
	units := map[string]int64{
		"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
		"ms": int64(time.Millisecond), "s": int64(time.Second), "years": int64(365 * 24 * time.Hour),
	}
	v := int64(1)
	for _, factor := range strings.Split(s, "×") {
		num, unit, _ := strings.Cut(strings.TrimSpace(factor), " ")
		n, err := strconv.ParseInt(num, 10, 64)
		mult, known := units[unit]
		if err != nil || !known {
			t.Fatalf("cannot read the default %q", cell)
		}
		v *= n * mult
	}
	return v
}

// TestDocumentedDefaults checks each default the table of limits gives for
// the call layer against the code: the defaults a Peer and a Server start
// from, and the fixed bounds; that the concurrent calls are the session's
// stream limit, as the table's mux row says; and that every size and call
// limit option has its row.
func TestDocumentedDefaults(t *testing.T) {
	pc := newPeerConfig()
	if sc := NewServer().cfg.peer; sc.maxRecv != pc.maxRecv || sc.maxSend != pc.maxSend || sc.maxHeader != pc.maxHeader {
		t.Fatalf("a Server's defaults %+v differ from a Peer's %+v", sc, pc)
	}
	if pc.maxHeader != 0 || pc.muxConfig().MaxIncomingStreams != 0 {
		t.Fatalf("a Peer overrides the defaults of MaxHeaderListSize or of the session's stream limit: %+v", pc)
	}
	sc := NewServer().cfg
	grace := int64(sc.maxAgeGrace)
	if grace == 0 {
		grace = -1 // no bound: "none"
	}
	rows := readLimitsTable(t)
	streamLimit := int64(-2)
	for _, r := range rows {
		if r.name == "Concurrent streams the peer may open" {
			streamLimit = limitValue(t, r.def)
		}
	}
	want := map[string]int64{
		"Message received":                       int64(pc.maxRecv),
		"Message sent":                           int64(pc.maxSend),
		"Header or trailer size":                 defaultMaxHeaderListSize,
		"Metadata entries per header or trailer": maxMetadataEntries,
		"Status details":                         maxStatusDetails,
		"Concurrent calls from the peer":         streamLimit,
		"Allocation ahead of a part's bytes":     minPayloadGrowth,
		"Deadline from the wire":                 int64(maxTimeout),
		"Peer.Close flush":                       int64(goAwayWait),
		"Trailer past the deadline":              int64(trailerGrace),
		"GracefulStop":                           -1, // no bound: Stop is the bound
		"Session age at a Server":                int64(sc.maxAge),
		"Calls in flight after the age":          grace,
		"Idle session at a Server":               int64(sc.peer.muxConfig().IdleTimeout),
		"Session hello":                          int64(defaultHandshakeTimeout),
		"Services named in a session hello":      maxServices,
		"Authenticators running at once":         defaultAuthSlots,
	}
	options := ""
	for _, r := range rows {
		if r.layer != "rpc" {
			continue
		}
		options += r.option
		w, ok := want[r.name]
		if !ok {
			t.Errorf("the table has a row %q that this test does not know", r.name)
			continue
		}
		delete(want, r.name)
		if got := limitValue(t, r.def); got != w {
			t.Errorf("%s: the table says %q (%d), the code %d", r.name, r.def, got, w)
		}
	}
	for name := range want {
		t.Errorf("the table has no row %q", name)
	}
	for _, opt := range []string{"MaxRecvMsgSize", "MaxSendMsgSize", "MaxCallRecvMsgSize", "MaxCallSendMsgSize", "MaxHeaderListSize", "MaxConcurrentCalls",
		"MaxConnectionAge", "MaxConnectionAgeGrace", "MaxConnectionIdle", "WithAuthenticator"} {
		if !strings.Contains(options, "`rpc."+opt+"`") {
			t.Errorf("no row of the table is configured by rpc.%s", opt)
		}
	}
}
