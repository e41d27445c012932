package main

import (
	"bytes"
	"context"
	"math"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	routeguidev1 "github.com/muxrpc/muxrpc/proto/routeguide/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const want = `GetFeature 51.5007, -0.1246: Big Ben
GetFeature 51.5060, -0.1100: no feature
ListFeatures from 51.5030, -0.1000 to 51.5100, -0.0700:
  Tower Bridge at 51.5055, -0.0754
  Tower of London at 51.5081, -0.0759
  The Shard at 51.5045, -0.0865
  Borough Market at 51.5055, -0.0910
  Shakespeare's Globe at 51.5081, -0.0972
  Millennium Bridge at 51.5095, -0.0985
  Tate Modern at 51.5076, -0.0994
RecordRoute: sent 51.5014, -0.1419
RecordRoute: sent 51.5080, -0.1281
RecordRoute: sent 51.5106, -0.1190
RecordRoute: sent 51.5138, -0.0984
RecordRoute: sent 51.5095, -0.0985
RecordRoute: sent 51.5076, -0.0994
RecordRoute: 6 points, 5 at features, 4065 m, in 0 s
RouteChat: at 51.5007, -0.1246, earlier: "first at Big Ben"
RouteChat: at 51.5007, -0.1246, earlier: "first at Big Ben"
RouteChat: at 51.5007, -0.1246, earlier: "second at Big Ben"
RouteChat: at 51.5033, -0.1196, earlier: "first at the London Eye"
RouteChat: 6 notes sent, 4 earlier notes received
`

// elapsed is the number of seconds in RecordRoute's summary, the one value
// that may vary (on a slow machine, the route takes a second or more).
var elapsed = regexp.MustCompile(`(?m)^(RecordRoute: .* m, in )\d+( s)$`)

// checkLines compares what the client printed with want, line by line,
// but for RecordRoute's elapsed time.
func checkLines(t *testing.T, got, want string) {
	t.Helper()
	got = elapsed.ReplaceAllString(got, "${1}0${2}")
	if got != want {
		t.Errorf("the client printed:\n%s\nwant:\n%s", got, want)
	}
}

// TestDemo runs the demo as `go run ./examples/routeguide` does and checks
// every line it prints.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := runBoth(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if !elapsed.MatchString(out.String()) {
		t.Errorf("no RecordRoute summary in:\n%s", &out)
	}
	checkLines(t, out.String(), want)
}

// TestListenAndConnect runs the server as -listen does and the client
// twice against it as -connect does: the second client's RouteChat gets
// the first's notes too. Ending the server's context, as SIGINT does,
// stops it gracefully.
func TestListenAndConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, interrupt := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(srvCtx, lis) }()

	var first, second bytes.Buffer
	if err := runClient(ctx, &first, lis.Addr().String()); err != nil {
		t.Fatal(err)
	}
	checkLines(t, first.String(), want)
	if err := runClient(ctx, &second, lis.Addr().String()); err != nil {
		t.Fatal(err)
	}
	// Per note, the notes left at its place before: Big Ben 3, the London
	// Eye 2, Big Ben 4, Tower Bridge 1, Big Ben 5, the London Eye 3.
	if last := "RouteChat: 6 notes sent, 18 earlier notes received\n"; !strings.HasSuffix(second.String(), last) {
		t.Errorf("the second client printed:\n%s\nwant it to end with %q", &second, last)
	}

	interrupt()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the server did not stop")
	}
}

// TestBadPoint checks that a point off the globe fails with
// InvalidArgument.
func TestBadPoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(srvCtx, lis) }()
	defer func() { stop(); <-served }()

	peer, err := rpc.Dial(ctx, lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	_, err = routeguidev1.NewRouteGuideClient(peer).GetFeature(ctx, &routeguidev1.Point{Latitude: 91e7})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetFeature at latitude 91: %v, want InvalidArgument", err)
	}
}

// TestFeatures checks the embedded map: some twenty named features, each
// at a place of its own.
func TestFeatures(t *testing.T) {
	g, err := newRouteGuide()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(g.features); n < 15 || n > 30 {
		t.Errorf("%d features", n)
	}
	if len(g.at) != len(g.features) {
		t.Errorf("%d features at %d places", len(g.features), len(g.at))
	}
	for _, f := range g.features {
		if f.Name == "" || valid(f.Location) != nil {
			t.Errorf("feature %q at %s", f.Name, format(f.Location))
		}
	}
}

// TestMetres checks the distance against one degree of latitude, some
// 111.19 km on a sphere of the Earth's mean radius.
func TestMetres(t *testing.T) {
	d := metres(pt(51, 0), pt(52, 0))
	if want := 6371e3 * math.Pi / 180; math.Abs(d-want) > 1 {
		t.Errorf("one degree of latitude: %.0f m, want %.0f", d, want)
	}
}
