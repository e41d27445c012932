package integration

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// rrKey names an RRset: a lower-case fully qualified name and a type.
type rrKey struct {
	name  string
	qtype uint16
}

// dnsServer is an authoritative DNS server on 127.0.0.1, over UDP and, if
// the same port is free for it, TCP, answering from a zone the test
// changes while it runs. It counts the queries it gets.
type dnsServer struct {
	addr string // host:port of both listeners

	mu      sync.Mutex
	zone    map[rrKey][][]dns.RR // answers, cycled through query by query
	queries map[rrKey]int
	tcpQs   int
}

// startDNSServer starts a server with an empty zone, stopped at the end of
// the test.
func startDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	var (
		pc  net.PacketConn
		l   net.Listener
		err error
	)
	for range 10 { // a port free for UDP may be taken for TCP
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatalf("listen udp: %v", err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		t.Logf("no TCP listener on %s: %v", pc.LocalAddr(), err)
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no port free for both UDP and TCP in 10 tries: %v", err)
	}
	s := &dnsServer{addr: pc.LocalAddr().String(), zone: map[rrKey][][]dns.RR{}, queries: map[rrKey]int{}}
	s.serve(t, &dns.Server{PacketConn: pc, Handler: s})
	s.serve(t, &dns.Server{Listener: l, Handler: s})
	return s
}

// serve runs srv until the end of the test.
func (s *dnsServer) serve(t *testing.T, srv *dns.Server) {
	t.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("DNS server: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("DNS server did not start within 5s")
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("DNS server shutdown: %v", err)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("DNS server did not stop within 5s")
		}
	})
}

// set makes rrs, parsed from zone-file lines, the answer for name and
// qtype; no rrs deletes them.
func (s *dnsServer) set(t *testing.T, name string, qtype uint16, rrs ...string) {
	t.Helper()
	s.cycle(t, name, qtype, rrs)
}

// cycle makes the answers for name and qtype take, query after query, each
// of sets in turn.
func (s *dnsServer) cycle(t *testing.T, name string, qtype uint16, sets ...[]string) {
	t.Helper()
	var answers [][]dns.RR
	for _, set := range sets {
		var rrs []dns.RR
		for _, line := range set {
			rr, err := dns.NewRR(line)
			if err != nil {
				t.Fatalf("bad record %q: %v", line, err)
			}
			rrs = append(rrs, rr)
		}
		answers = append(answers, rrs)
	}
	k := rrKey{strings.ToLower(dns.Fqdn(name)), qtype}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(answers) == 0 || len(answers) == 1 && len(answers[0]) == 0 {
		delete(s.zone, k)
		return
	}
	s.zone[k] = answers
}

// count returns how many queries for name and qtype the server got.
func (s *dnsServer) count(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[rrKey{strings.ToLower(dns.Fqdn(name)), qtype}]
}

// tcpCount returns how many queries came over TCP.
func (s *dnsServer) tcpCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcpQs
}

// ServeDNS answers from the zone: the records of the question's name and
// type, no records (NODATA) for a name the zone has other types of, and
// NXDOMAIN for a name it does not have.
func (s *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	udp := w.LocalAddr().Network() == "udp"
	if len(req.Question) == 1 {
		q := req.Question[0]
		k := rrKey{strings.ToLower(q.Name), q.Qtype}
		s.mu.Lock()
		n := s.queries[k]
		s.queries[k]++
		if !udp {
			s.tcpQs++
		}
		if answers, ok := s.zone[k]; ok {
			m.Answer = append(m.Answer, answers[n%len(answers)]...)
		} else {
			m.Rcode = dns.RcodeNameError
			for other := range s.zone {
				if other.name == k.name {
					m.Rcode = dns.RcodeSuccess
				}
			}
		}
		s.mu.Unlock()
	}
	if udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
			m.SetEdns0(opt.UDPSize(), false)
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// blackhole is a UDP DNS server that reads queries and never answers.
type blackhole struct {
	addr    string
	queries atomic.Int64
}

// startBlackhole starts one, stopped at the end of the test.
func startBlackhole(t *testing.T) *blackhole {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	b := &blackhole{addr: pc.LocalAddr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			b.queries.Add(1)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return b
}
