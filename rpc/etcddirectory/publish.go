package etcddirectory

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/muxrpc/muxrpc/rpc"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of the Options.
const (
	DefaultPrefix = "/muxrpc/agents"
	DefaultTTL    = 10 * time.Second
)

// maxTxnOps bounds the operations of one transaction: etcd's default
// --max-txn-ops, which a server refuses to exceed.
const maxTxnOps = 128

// linger is how long Publish waits for another Directory event before it
// commits those it has: joins that come together (a server's agents
// reconnecting after it restarts, the whole Directory after a lost
// lease) then share transactions instead of taking a round trip each.
const linger = 2 * time.Millisecond

// Backoff between failed attempts: from minBackoff, doubling, up to
// maxBackoff, each within ±20%.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Options say where and how Publish publishes a Directory.
type Options struct {
	// Prefix is the keys' common prefix, without a trailing slash;
	// DefaultPrefix if empty. Locate must be given the same one.
	Prefix string
	// ServerID names this server among those publishing under Prefix; it
	// must be unique to it, since a key is a name and a ServerID.
	// Required.
	ServerID string
	// Address is the value of this server's keys, what Locate returns
	// for it: where the others reach this server, "host:port" say. It
	// may be empty, for a fleet that finds its servers by ServerID.
	Address string
	// TTL is the lease's time to live: how long the keys of a server
	// that died stay behind. DefaultTTL if zero; rounded up to whole
	// seconds, and raised by etcd to its minimum (2 s with its default
	// heartbeat and election timeout) if below it.
	TTL time.Duration
	// OnError, if set, is called with every error that Publish retries
	// after, for logging: etcd out of reach, a lost lease. Publish waits
	// for it to return.
	OnError func(error)
}

// ErrLeaseLost is what OnError is given, wrapped, when the lease under
// which a server's keys were published has gone: it expired while etcd
// was out of reach, or someone revoked it. Publish publishes the
// Directory again under a new lease.
var ErrLeaseLost = errors.New("etcddirectory: the lease was lost")

// Publish publishes dir under opts.Prefix in etcd, through cli, until ctx
// ends: a key for each name dir lists, put when the name joins and
// deleted when its last session leaves, under a lease kept alive. When
// ctx ends it revokes the lease, so that the keys vanish at once, and
// returns nil, or the revocation's error (the keys then expire with the
// lease).
//
// Errors from etcd are retried while ctx lives, with exponential backoff
// (100 ms doubling to 5 s), and reported to opts.OnError: a transaction
// that failed is tried again with the changes that came meanwhile, a
// lease that could not be granted is asked for again, and a lost lease
// is replaced by a new one under which the whole Directory is published
// again. Publish returns early only when opts has no ServerID, or when
// cli is closed, which leaves the lease to expire as a crash would.
func Publish(ctx context.Context, cli *clientv3.Client, dir *rpc.Directory, opts Options) error {
	if opts.ServerID == "" {
		return errors.New("etcddirectory: Publish needs a ServerID")
	}
	p := &publisher{
		cli:    cli,
		dir:    dir,
		prefix: prefixOrDefault(opts.Prefix),
		id:     url.PathEscape(opts.ServerID),
		addr:   opts.Address,
		ttl:    int64(math.Ceil(orDefault(opts.TTL, DefaultTTL).Seconds())),
		report: opts.OnError,
	}
	return p.run(ctx)
}

// publisher is one Publish.
type publisher struct {
	cli    *clientv3.Client
	dir    *rpc.Directory
	prefix string
	id     string // ServerID, escaped
	addr   string
	ttl    int64 // seconds
	report func(error)
}

// run publishes under one lease after another, until ctx ends.
func (p *publisher) run(ctx context.Context) error {
	failures := 0
	for {
		lease, err := p.grant(ctx)
		if err == nil {
			var kept bool
			kept, err = p.serve(ctx, lease)
			if kept {
				failures = 0 // the lease lived: the next is asked for after the shortest backoff
			}
		}
		if ctx.Err() != nil {
			return p.revoke(ctx, lease)
		}
		if p.cli.Ctx().Err() != nil {
			return fmt.Errorf("etcddirectory: the etcd client was closed: %w", err)
		}
		p.fail(err)
		failures++
		if !sleep(ctx, backoff(failures)) {
			return nil
		}
	}
}

// grant grants a lease.
func (p *publisher) grant(ctx context.Context) (clientv3.LeaseID, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opTimeout())
	defer cancel()
	resp, err := p.cli.Grant(ctx, p.ttl)
	if err != nil {
		return clientv3.NoLease, fmt.Errorf("etcddirectory: grant a lease: %w", err)
	}
	return resp.ID, nil
}

// serve keeps lease alive and publishes the Directory under it, until ctx
// ends (it returns nil) or the lease is lost or cannot be kept. kept
// reports whether etcd renewed the lease at least once.
//
// A lost lease's keys have gone with it, or go when it expires: Publish
// knows it lost its lease when etcd has not renewed it for a TTL, or
// says it is gone. So a new term starts from nothing and publishes the
// whole Directory, whose Watch begins with every name listed.
func (p *publisher) serve(ctx context.Context, lease clientv3.LeaseID) (kept bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	alive, err := p.cli.KeepAlive(ctx, lease)
	if err != nil {
		return false, fmt.Errorf("etcddirectory: keep lease %x alive: %w", lease, err)
	}
	events := p.dir.Watch(ctx)
	tm := term{sessions: map[string]int{}, published: map[string]bool{}, dirty: map[string]bool{}}
	gather := time.NewTimer(linger)
	gather.Stop()
	var retry <-chan time.Time // while set, a failed commit waits for it
	failures := 0
	for {
		select {
		case e, ok := <-events:
			if !ok {
				return kept, nil // ctx ended
			}
			tm.add(e)
			tm.gather(events, gather)
		case _, ok := <-alive:
			if !ok {
				if ctx.Err() != nil {
					return kept, nil
				}
				return kept, fmt.Errorf("%w: lease %x was not renewed", ErrLeaseLost, lease)
			}
			kept = true
			continue
		case <-retry:
			retry = nil
		case <-ctx.Done():
			return kept, nil
		}
		if retry != nil || len(tm.dirty) == 0 {
			continue
		}
		if err := p.commit(ctx, lease, &tm); err != nil {
			if ctx.Err() != nil {
				return kept, nil
			}
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return kept, fmt.Errorf("%w: %w", ErrLeaseLost, err)
			}
			p.fail(err)
			failures++
			retry = time.After(backoff(failures))
			continue
		}
		failures = 0
	}
}

// gather adds to tm the events that follow within linger of each other,
// until tm has a transaction's worth of changes; t is its timer.
func (tm *term) gather(events <-chan rpc.DirectoryEvent, t *time.Timer) {
	for len(tm.dirty) < maxTxnOps {
		t.Reset(linger)
		select {
		case e, ok := <-events:
			t.Stop()
			if !ok {
				return
			}
			tm.add(e)
		case <-t.C:
			return
		}
	}
}

// commit writes tm's changes, in transactions of up to maxTxnOps
// operations, and forgets each transaction's once it has committed.
func (p *publisher) commit(ctx context.Context, lease clientv3.LeaseID, tm *term) error {
	for len(tm.dirty) > 0 {
		var ops []clientv3.Op
		var names []string
		for name := range tm.dirty {
			if len(ops) == maxTxnOps {
				break
			}
			names = append(names, name)
			key := p.prefix + "/" + url.PathEscape(name) + "/" + p.id
			switch held := tm.sessions[name] > 0; {
			case held && !tm.published[name]:
				ops = append(ops, clientv3.OpPut(key, p.addr, clientv3.WithLease(lease)))
			case !held && tm.published[name]:
				ops = append(ops, clientv3.OpDelete(key))
			}
		}
		if len(ops) > 0 {
			tctx, cancel := context.WithTimeout(ctx, p.opTimeout())
			_, err := p.cli.Txn(tctx).Then(ops...).Commit()
			cancel()
			if err != nil {
				return fmt.Errorf("etcddirectory: publish %d changes: %w", len(ops), err)
			}
		}
		for _, name := range names {
			tm.published[name] = tm.sessions[name] > 0
			if !tm.published[name] {
				delete(tm.published, name)
				delete(tm.sessions, name)
			}
			delete(tm.dirty, name)
		}
	}
	return nil
}

// opTimeout bounds one request to etcd: a TTL, after which the lease
// has expired if etcd heard nothing from this server meanwhile, so that
// a request stuck on a dead connection lets Publish notice that.
func (p *publisher) opTimeout() time.Duration { return time.Duration(p.ttl) * time.Second }

// revoke revokes lease, unless it is NoLease, once ctx has ended, so
// that its keys vanish at once; it gives up after the TTL, when they
// would have expired anyway.
func (p *publisher) revoke(ctx context.Context, lease clientv3.LeaseID) error {
	if lease == clientv3.NoLease {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opTimeout())
	defer cancel()
	if _, err := p.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("etcddirectory: revoke lease %x: %w", lease, err)
	}
	return nil
}

// fail reports err to OnError.
func (p *publisher) fail(err error) {
	if p.report != nil {
		p.report(err)
	}
}

// A term is what Publish knows, under one lease, of the Directory and of
// what it has published.
type term struct {
	sessions  map[string]int  // the sessions listed under each name
	published map[string]bool // the names whose key is in etcd under this term's lease
	dirty     map[string]bool // the names whose key may not match sessions
}

// add counts e.
func (tm *term) add(e rpc.DirectoryEvent) {
	if e.Joined {
		tm.sessions[e.Name]++
	} else {
		tm.sessions[e.Name]--
	}
	tm.dirty[e.Name] = true
}

// backoff is how long to wait after failures failures in a row.
func backoff(failures int) time.Duration {
	d := minBackoff << min(failures-1, 10)
	d = min(d, maxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits for d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// prefixOrDefault is prefix without its trailing slashes, or
// DefaultPrefix.
func prefixOrDefault(prefix string) string {
	if prefix = strings.TrimRight(prefix, "/"); prefix == "" {
		return DefaultPrefix
	}
	return prefix
}

// orDefault is d, or def if d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
