// Command routeguide shows muxrpc's four kinds of call on a small map of
// London's landmarks, in the spirit of gRPC's route guide example: the
// RouteGuide service of proto/routeguide/v1 answers GetFeature (unary),
// ListFeatures (server streaming), RecordRoute (client streaming) and
// RouteChat (bidirectional streaming). The server's map, features.json,
// is embedded in the program.
//
// By default the server and the client run in one process, on a loopback
// port:
//
//	go run ./examples/routeguide
//
// or in two processes (the server stops gracefully on Ctrl-C or SIGTERM,
// and keeps RouteChat's notes across clients until then):
//
//	go run ./examples/routeguide -listen 127.0.0.1:7070
//	go run ./examples/routeguide -connect 127.0.0.1:7070
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	routeguidev1 "github.com/muxrpc/muxrpc/proto/routeguide/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	listen := flag.String("listen", "", "only serve, on this address")
	connect := flag.String("connect", "", "only run the client, against this address")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *listen != "":
		var lis net.Listener
		if lis, err = net.Listen("tcp", *listen); err == nil {
			log.Printf("serving on %s", lis.Addr())
			err = serve(ctx, lis)
		}
	case *connect != "":
		err = runClient(ctx, os.Stdout, *connect)
	default:
		err = runBoth(ctx, os.Stdout)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runBoth serves on a loopback port, runs the client against it, and stops
// the server.
func runBoth(ctx context.Context, out io.Writer) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srvCtx, stopServer := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(srvCtx, lis) }()
	err = runClient(ctx, out, lis.Addr().String())
	stopServer()
	return errors.Join(err, <-served)
}

// serve serves RouteGuide on lis until ctx ends, then stops gracefully.
func serve(ctx context.Context, lis net.Listener) error {
	guide, err := newRouteGuide()
	if err != nil {
		lis.Close()
		return err
	}
	srv := rpc.NewServer()
	routeguidev1.RegisterRouteGuideServer(srv, guide)
	defer context.AfterFunc(ctx, srv.GracefulStop)()
	return srv.Serve(lis)
}

// The client.

// runClient makes one call of each kind, printing what it sends and
// receives as it goes.
func runClient(ctx context.Context, out io.Writer, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peer, err := rpc.Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer peer.Close()
	guide := routeguidev1.NewRouteGuideClient(peer)

	// Unary: the feature at a point, or none.
	for _, p := range []*routeguidev1.Point{pt(51.5007, -0.1246), pt(51.5060, -0.1100)} {
		f, err := guide.GetFeature(ctx, p)
		if err != nil {
			return err
		}
		if f.Name == "" {
			fmt.Fprintf(out, "GetFeature %s: no feature\n", format(p))
		} else {
			fmt.Fprintf(out, "GetFeature %s: %s\n", format(p), f.Name)
		}
	}

	// Server streaming: the features inside a rectangle, as they come.
	rect := &routeguidev1.Rectangle{Lo: pt(51.5030, -0.1000), Hi: pt(51.5100, -0.0700)}
	fmt.Fprintf(out, "ListFeatures from %s to %s:\n", format(rect.Lo), format(rect.Hi))
	features, err := guide.ListFeatures(ctx, rect)
	if err != nil {
		return err
	}
	for {
		f, err := features.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  %s at %s\n", f.Name, format(f.Location))
	}

	// Client streaming: a walk from Buckingham Palace to Tate Modern, one
	// point at a time, and the server's summary of it.
	route := []*routeguidev1.Point{
		pt(51.5014, -0.1419), // Buckingham Palace
		pt(51.5080, -0.1281), // Trafalgar Square
		pt(51.5106, -0.1190), // on the Strand, at no feature
		pt(51.5138, -0.0984), // St Paul's Cathedral
		pt(51.5095, -0.0985), // Millennium Bridge
		pt(51.5076, -0.0994), // Tate Modern
	}
	record, err := guide.RecordRoute(ctx)
	if err != nil {
		return err
	}
	for _, p := range route {
		if err := record.Send(p); err != nil {
			return err
		}
		fmt.Fprintf(out, "RecordRoute: sent %s\n", format(p))
	}
	summary, err := record.CloseAndRecv()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "RecordRoute: %d points, %d at features, %d m, in %d s\n",
		summary.PointCount, summary.FeatureCount, summary.Distance, summary.ElapsedTime)

	// Bidirectional streaming: notes left at three places; for each, the
	// server sends back the notes left there before it. One goroutine
	// sends while this one receives.
	notes := []*routeguidev1.RouteNote{
		{Location: pt(51.5007, -0.1246), Message: "first at Big Ben"},
		{Location: pt(51.5033, -0.1196), Message: "first at the London Eye"},
		{Location: pt(51.5007, -0.1246), Message: "second at Big Ben"},
		{Location: pt(51.5055, -0.0754), Message: "first at Tower Bridge"},
		{Location: pt(51.5007, -0.1246), Message: "third at Big Ben"},
		{Location: pt(51.5033, -0.1196), Message: "second at the London Eye"},
	}
	chat, err := guide.RouteChat(ctx)
	if err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() {
		for _, n := range notes {
			if err := chat.Send(n); err != nil {
				sent <- err
				return
			}
		}
		sent <- chat.CloseSend()
	}()
	var received int
	for {
		n, err := chat.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err // the call's context ends with this function, and the sender with it
		}
		received++
		fmt.Fprintf(out, "RouteChat: at %s, earlier: %q\n", format(n.Location), n.Message)
	}
	if err := <-sent; err != nil {
		return err
	}
	fmt.Fprintf(out, "RouteChat: %d notes sent, %d earlier notes received\n", len(notes), received)
	return nil
}

// pt returns the Point at lat and long, in degrees.
func pt(lat, long float64) *routeguidev1.Point {
	return &routeguidev1.Point{Latitude: int32(math.Round(lat * 1e7)), Longitude: int32(math.Round(long * 1e7))}
}

// format formats p in degrees to four decimal places (some 10 m):
// "51.5007, -0.1246".
func format(p *routeguidev1.Point) string {
	return fmt.Sprintf("%.4f, %.4f", float64(p.GetLatitude())/1e7, float64(p.GetLongitude())/1e7)
}

// The server.

//go:embed features.json
var featuresJSON []byte

// routeGuide implements RouteGuide over the features of features.json.
type routeGuide struct {
	routeguidev1.UnimplementedRouteGuideServer
	features []*routeguidev1.Feature // in the file's order
	at       map[location]*routeguidev1.Feature

	mu    sync.Mutex
	notes map[location][]*routeguidev1.RouteNote // RouteChat's, of every client
}

// A location is a Point as a map key.
type location struct{ lat, long int32 }

func locationOf(p *routeguidev1.Point) location {
	return location{p.GetLatitude(), p.GetLongitude()}
}

func newRouteGuide() (*routeGuide, error) {
	var file []struct {
		Name     string
		Location struct{ Latitude, Longitude int32 }
	}
	if err := json.Unmarshal(featuresJSON, &file); err != nil {
		return nil, fmt.Errorf("features.json: %w", err)
	}
	g := &routeGuide{at: make(map[location]*routeguidev1.Feature), notes: make(map[location][]*routeguidev1.RouteNote)}
	for _, f := range file {
		feature := &routeguidev1.Feature{Name: f.Name, Location: &routeguidev1.Point{Latitude: f.Location.Latitude, Longitude: f.Location.Longitude}}
		g.features = append(g.features, feature)
		g.at[locationOf(feature.Location)] = feature
	}
	return g, nil
}

// valid checks that p is a point on the globe.
func valid(p *routeguidev1.Point) error {
	if lat, long := p.GetLatitude(), p.GetLongitude(); lat < -90e7 || lat > 90e7 || long < -180e7 || long > 180e7 {
		return status.Errorf(codes.InvalidArgument, "%s is not on the globe", format(p))
	}
	return nil
}

func (g *routeGuide) GetFeature(ctx context.Context, p *routeguidev1.Point) (*routeguidev1.Feature, error) {
	if err := valid(p); err != nil {
		return nil, err
	}
	if f, ok := g.at[locationOf(p)]; ok {
		return f, nil
	}
	return &routeguidev1.Feature{Location: p}, nil // no feature there
}

func (g *routeGuide) ListFeatures(rect *routeguidev1.Rectangle, stream routeguidev1.RouteGuide_ListFeaturesServer) error {
	lo, hi := rect.GetLo(), rect.GetHi()
	minLat, maxLat := min(lo.GetLatitude(), hi.GetLatitude()), max(lo.GetLatitude(), hi.GetLatitude())
	minLong, maxLong := min(lo.GetLongitude(), hi.GetLongitude()), max(lo.GetLongitude(), hi.GetLongitude())
	for _, f := range g.features {
		lat, long := f.Location.Latitude, f.Location.Longitude
		if lat >= minLat && lat <= maxLat && long >= minLong && long <= maxLong {
			if err := stream.Send(f); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g *routeGuide) RecordRoute(stream routeguidev1.RouteGuide_RecordRouteServer) error {
	start := time.Now()
	var summary routeguidev1.RouteSummary
	var distance float64
	var last *routeguidev1.Point
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			summary.Distance = int32(math.Round(distance))
			summary.ElapsedTime = int32(time.Since(start) / time.Second)
			return stream.SendAndClose(&summary)
		}
		if err != nil {
			return err
		}
		if err := valid(p); err != nil {
			return err
		}
		summary.PointCount++
		if _, ok := g.at[locationOf(p)]; ok {
			summary.FeatureCount++
		}
		if last != nil {
			distance += metres(last, p)
		}
		last = p
	}
}

func (g *routeGuide) RouteChat(stream routeguidev1.RouteGuide_RouteChatServer) error {
	for {
		note, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		at := locationOf(note.Location)
		g.mu.Lock()
		earlier := g.notes[at]
		g.notes[at] = append(earlier[:len(earlier):len(earlier)], note) // earlier stays as it is
		g.mu.Unlock()
		for _, n := range earlier {
			if err := stream.Send(n); err != nil {
				return err
			}
		}
	}
}

// metres is the great-circle distance from p to q, by the haversine
// formula on a sphere of the Earth's mean radius.
func metres(p, q *routeguidev1.Point) float64 {
	const earthRadius = 6371e3 // metres
	rad := func(e7 int32) float64 { return float64(e7) / 1e7 * math.Pi / 180 }
	lat1, lat2 := rad(p.Latitude), rad(q.Latitude)
	dLat, dLong := lat2-lat1, rad(q.Longitude)-rad(p.Longitude)
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1)*math.Cos(lat2)*math.Sin(dLong/2)*math.Sin(dLong/2)
	return earthRadius * 2 * math.Atan2(math.Sqrt(a), math.Sqrt(1-a))
}
