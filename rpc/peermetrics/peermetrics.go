// Package peermetrics exports the peers of an [rpc.Server] to Prometheus:
// for each peer connected now, what [rpc.Peer.Stats] says of it.
//
// [NewCollector] returns a prometheus.Collector to register:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(peermetrics.NewCollector(srv))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The collector reads the peers' Stats when Prometheus scrapes it, from
// [rpc.Server.Peers], and keeps nothing in between: a call costs nothing
// more for being collected, and a scrape costs one Stats per peer. It
// exports, each labelled by peer (the remote address) and identity (the
// Name of the peer's [rpc.Identity], empty for an anonymous peer):
//
//	muxrpc_peer_streams_open                 gauge    open streams, both directions
//	muxrpc_peer_calls_in_flight{direction}   gauge    calls in flight: "out" made by the server, "in" served
//	muxrpc_peer_bytes_sent_total             counter  bytes written to the connection, framing included
//	muxrpc_peer_bytes_received_total         counter  bytes read from the connection, framing included
//	muxrpc_peer_rtt_seconds                  gauge    round trip of the last keepalive ping answered
//	muxrpc_peer_started_timestamp_seconds    gauge    when the session began, in Unix seconds
//
// and, with no per-peer label, muxrpc_peers, the number of peers. A peer
// without a measured round trip yet (and every peer on the Smux
// transport, whose keepalive is never answered) has no
// muxrpc_peer_rtt_seconds series, rather than a misleading 0.
//
// # Cardinality
//
// There is one series per metric per connected peer: a server with ten
// thousand agents exports ten thousand of each. A peer's series vanish
// when it disconnects, and a peer that reconnects comes back under a new
// peer label (its new source port), so that the bytes counters of a
// series only ever grow. Where two peers would share both labels (two
// anonymous peers on a Unix socket, whose remote addresses are all the
// same), the second and later get "#2", "#3" and so on after their
// address, in an order that may change from one scrape to the next. A
// server with more peers than its Prometheus can store should aggregate
// instead (sum by (identity), say, in a recording rule) or not register
// the collector.
package peermetrics

import (
	"strconv"

	"github.com/muxrpc/muxrpc/rpc"
	"github.com/prometheus/client_golang/prometheus"
)

// An Option configures a collector.
type Option func(*config)

type config struct {
	constLabels prometheus.Labels
}

// ConstLabels gives every metric of the collector these labels, to tell
// several Servers of one process apart: {"server": "public"}, say.
func ConstLabels(labels prometheus.Labels) Option {
	return func(c *config) { c.constLabels = labels }
}

// collector is NewCollector's.
type collector struct {
	srv *rpc.Server

	peers, streams, calls, sent, received, rtt, started *prometheus.Desc
}

// NewCollector returns a collector of srv's peers: see the package
// documentation for the metrics.
func NewCollector(srv *rpc.Server, opts ...Option) prometheus.Collector {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, cfg.constLabels)
	}
	peer := []string{"peer", "identity"}
	return &collector{
		srv: srv,
		peers: desc("muxrpc_peers",
			"Number of peers connected to the server whose sessions it admitted."),
		streams: desc("muxrpc_peer_streams_open",
			"Streams open on the peer's session, in both directions.", peer...),
		calls: desc("muxrpc_peer_calls_in_flight",
			`Calls in flight on the peer's session: direction "out" for those the server made to the peer, "in" for those it serves.`,
			append(peer, "direction")...),
		sent: desc("muxrpc_peer_bytes_sent_total",
			"Bytes the server wrote to the peer's connection, framing included.", peer...),
		received: desc("muxrpc_peer_bytes_received_total",
			"Bytes the server read from the peer's connection, framing included.", peer...),
		rtt: desc("muxrpc_peer_rtt_seconds",
			"Round trip of the last keepalive ping the peer answered, in seconds; absent until one was.", peer...),
		started: desc("muxrpc_peer_started_timestamp_seconds",
			"When the peer's session began, in seconds since the Unix epoch.", peer...),
	}
}

// Describe sends the descriptions of every metric the collector exports.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.peers, c.streams, c.calls, c.sent, c.received, c.rtt, c.started} {
		ch <- d
	}
}

// Collect sends the metrics of the peers connected now.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	peers := c.srv.Peers()
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(len(peers)))
	seen := make(map[[2]string]int, len(peers))
	for _, p := range peers {
		st := p.Stats()
		addr := ""
		if st.RemoteAddr != nil {
			addr = st.RemoteAddr.String()
		}
		key := [2]string{addr, st.Identity.Name}
		seen[key]++
		if n := seen[key]; n > 1 {
			addr += "#" + strconv.Itoa(n)
		}
		id := st.Identity.Name
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{addr, id}, extra...)...)
		}
		gauge(c.streams, float64(st.StreamsOpen))
		gauge(c.calls, float64(st.CallsOut), "out")
		gauge(c.calls, float64(st.CallsIn), "in")
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(st.BytesSent), addr, id)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(st.BytesReceived), addr, id)
		if st.LastRTT > 0 {
			gauge(c.rtt, st.LastRTT.Seconds())
		}
		gauge(c.started, float64(st.Started.UnixNano())/1e9)
	}
}
