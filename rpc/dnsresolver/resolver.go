package dnsresolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/resolver"
)

// backoffBase is the wait before the first retry of a failed resolution;
// each further failure doubles it, up to the refresh interval.
const backoffBase = time.Second

// dnsResolver resolves one target in a goroutine of its own, run.
type dnsResolver struct {
	cc   resolver.ClientConn
	t    target
	opts options
	res  *net.Resolver

	ctx    context.Context // cancelled by Close, ending run and its lookups
	cancel context.CancelFunc
	now    chan struct{} // ResolveNow's requests, coalesced
	done   chan struct{} // closed when run returns
	once   sync.Once
}

// ResolveNow asks for a resolution soon: not sooner than the minimum
// resolve interval after the last one ended, and not while a failed one
// waits for its retry. Requests made meanwhile count as one.
func (r *dnsResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

// Close stops the resolver, cancelling a lookup under way, and returns
// once its goroutine has; as that goroutine is the one that calls the
// ClientConn, Close must not be called from within UpdateState or
// ReportError.
func (r *dnsResolver) Close() {
	r.once.Do(r.cancel)
	<-r.done
}

// run resolves at once, then on its schedule, until Close.
func (r *dnsResolver) run() {
	defer close(r.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var (
		next     = time.Now() // when timer fires
		last     time.Time    // when the last resolution ended
		failures int          // consecutive failed resolutions
		sent     []string     // the sorted addresses UpdateState last took
		haveSent bool         // sent is what the ClientConn holds
	)
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.now:
			if failures > 0 {
				continue // the retry is already scheduled
			}
			if at := last.Add(r.opts.minResolve); at.Before(next) {
				next = at
				timer.Reset(time.Until(at))
			}
			continue
		case <-timer.C:
		}

		addrs, err := r.resolve()
		last = time.Now()
		if r.ctx.Err() != nil {
			return // closed meanwhile: the ClientConn wants no more
		}
		if err != nil {
			r.cc.ReportError(err)
			haveSent = false // the error replaced the addresses
		} else if key := sortedAddrs(addrs); !haveSent || !slices.Equal(key, sent) {
			if uerr := r.cc.UpdateState(resolver.State{Addresses: addrs}); uerr != nil {
				err = uerr
				haveSent = false
			} else {
				sent, haveSent = key, true
			}
		}

		wait := r.opts.refresh
		if err != nil {
			failures++
			wait = r.backoff(failures)
		} else {
			failures = 0
		}
		next = last.Add(wait)
		timer.Reset(wait)
	}
}

// backoff returns the wait before the retry that follows the given number
// of consecutive failures: backoffBase doubled for each failure after the
// first, within ±20%, and at most the refresh interval.
func (r *dnsResolver) backoff(failures int) time.Duration {
	d := backoffBase << min(failures-1, 20)
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(d, r.opts.refresh)
}

// sortedAddrs returns the addresses' Addr fields in order, to compare one
// resolution's set with another's.
func sortedAddrs(addrs []resolver.Address) []string {
	key := make([]string, len(addrs))
	for i, a := range addrs {
		key[i] = a.Addr
	}
	slices.Sort(key)
	return key
}

// resolve looks the target up once, within the resolve timeout.
func (r *dnsResolver) resolve() ([]resolver.Address, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.timeout)
	defer cancel()
	if r.t.port != "" {
		return r.lookupHost(ctx, r.t.host, r.t.port)
	}
	_, srvs, err := r.res.LookupSRV(ctx, "", "", r.t.host)
	// Go keeps the usable records of an answer that has unusable ones,
	// and reports those with an error: use what is left.
	srvs = slices.DeleteFunc(srvs, func(s *net.SRV) bool { return s.Target == "." || s.Port == 0 })
	if len(srvs) == 0 {
		var de *net.DNSError
		if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
			return nil, r.lookupError(ctx, "SRV", r.t.host, err)
		}
		// No SRV records: the name's own addresses, at the default port.
		return r.lookupHost(ctx, r.t.host, defaultPort)
	}

	// Each target's addresses, looked up at the same time; one target
	// that fails does not fail the others.
	found := make([][]resolver.Address, len(srvs))
	errs := make([]error, len(srvs))
	var wg sync.WaitGroup
	for i, s := range srvs {
		wg.Go(func() {
			found[i], errs[i] = r.lookupHost(ctx, s.Target, strconv.Itoa(int(s.Port)))
		})
	}
	wg.Wait()
	var addrs []resolver.Address
	seen := make(map[string]bool)
	for _, as := range found {
		for _, a := range as {
			if !seen[a.Addr] {
				seen[a.Addr] = true
				addrs = append(addrs, a)
			}
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("dnsresolver: no address for any SRV target of %q: %w", r.t.host, errors.Join(errs...))
	}
	return addrs, nil
}

// lookupHost returns an address with port for each of host's IPs.
func (r *dnsResolver) lookupHost(ctx context.Context, host, port string) ([]resolver.Address, error) {
	ips, err := r.res.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, r.lookupError(ctx, "A/AAAA", host, err)
	}
	var addrs []resolver.Address
	seen := make(map[string]bool)
	for _, ip := range ips {
		a := net.JoinHostPort(ip.Unmap().String(), port)
		if !seen[a] {
			seen[a] = true
			addrs = append(addrs, resolver.Address{Addr: a})
		}
	}
	if len(addrs) == 0 {
		return nil, r.lookupError(ctx, "A/AAAA", host, errors.New("no addresses"))
	}
	return addrs, nil
}

// lookupError is a failed lookup: its message names the query, the name,
// the server asked and the cause; it unwraps to the resolver's error.
type lookupError struct {
	msg string
	err error
}

func (e *lookupError) Error() string { return e.msg }
func (e *lookupError) Unwrap() error { return e.err }

// lookupError describes the failure err of a lookup, under ctx, of name's
// records of the given kind.
func (r *dnsResolver) lookupError(ctx context.Context, kind, name string, err error) error {
	server, cause := r.t.server, err.Error()
	var de *net.DNSError
	if errors.As(err, &de) {
		cause = de.Err
		if server == "" {
			server = de.Server
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		cause += fmt.Sprintf(" (no answer within the resolve timeout of %v)", r.opts.timeout)
	}
	at := " with the system resolver"
	if server != "" {
		at = " at DNS server " + server
	}
	return &lookupError{
		msg: fmt.Sprintf("dnsresolver: %s lookup of %q%s: %s", kind, name, at, cause),
		err: err,
	}
}
