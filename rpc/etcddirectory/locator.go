package etcddirectory

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A Locator answers what Locate does from a copy of the keys under a
// prefix that an etcd watch keeps current, so that a lookup costs no
// round trip: for a server that forwards many calls. Its answers lag
// etcd's by the watch's delay, milliseconds on a healthy cluster; while
// etcd is out of reach they are those of the last copy, and a watch that
// cannot resume (etcd compacted the revisions it missed) reads the
// prefix again. A caller that forwards on its answer must expect the
// name gone, as with Locate.
type Locator struct {
	cli    *clientv3.Client
	under  string // the prefix, with its slash
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.RWMutex
	byName map[string][]located // each name's servers, newest first
}

// located is one key of a Locator's copy.
type located struct {
	Location
	created int64 // the key's create revision
}

// NewLocator reads the keys under prefix (DefaultPrefix if empty)
// through cli, within ctx, and returns a Locator that watches them until
// Close. It fails if that first read does.
func NewLocator(ctx context.Context, cli *clientv3.Client, prefix string) (*Locator, error) {
	l := &Locator{cli: cli, under: prefixOrDefault(prefix) + "/", done: make(chan struct{})}
	rev, err := l.load(ctx)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(wctx, rev)
	return l, nil
}

// Locate returns the servers that hold name, newest first, as Locate
// does, from the Locator's copy; none when no server holds it.
func (l *Locator) Locate(name string) []Location {
	l.mu.RLock()
	defer l.mu.RUnlock()
	held := l.byName[name]
	locs := make([]Location, len(held))
	for i, h := range held {
		locs[i] = h.Location
	}
	return locs
}

// Close stops the Locator's watch and waits for it to end. Locate goes on
// answering from the last copy.
func (l *Locator) Close() {
	l.cancel()
	<-l.done
}

// run watches the prefix from rev on until ctx ends, reading it again
// whenever the watch cannot go on.
func (l *Locator) run(ctx context.Context, rev int64) {
	defer close(l.done)
	failures := 0
	for {
		if rev > 0 && l.watch(ctx, rev) {
			failures = 0
		} else {
			failures++
		}
		if ctx.Err() != nil || l.cli.Ctx().Err() != nil {
			return
		}
		// A watch that ended at once, or a read that failed, is tried
		// again after a backoff.
		if failures > 0 && !sleep(ctx, backoff(failures)) {
			return
		}
		rev, _ = l.load(ctx)
	}
}

// load reads the prefix and replaces the copy, and returns the revision
// it read at.
func (l *Locator) load(ctx context.Context) (int64, error) {
	resp, err := l.cli.Get(ctx, l.under, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcddirectory: read %s: %w", l.under, err)
	}
	byName := map[string][]located{}
	for _, kv := range resp.Kvs {
		if name, loc, ok := l.parse(kv); ok {
			byName[name] = insert(byName[name], loc)
		}
	}
	l.mu.Lock()
	l.byName = byName
	l.mu.Unlock()
	return resp.Header.Revision, nil
}

// watch applies the changes after rev to the copy, until ctx ends or the
// watch fails, and reports whether it had any response.
func (l *Locator) watch(ctx context.Context, rev int64) (answered bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // a watch that failed is closed, not left to its client
	// WithRequireLeader: a member cut off from the cluster ends the watch
	// instead of leaving it silent.
	changes := l.cli.Watch(clientv3.WithRequireLeader(ctx), l.under, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range changes {
		if resp.Err() != nil {
			return answered
		}
		answered = true
		l.mu.Lock()
		for _, ev := range resp.Events {
			name, loc, ok := l.parse(ev.Kv)
			if !ok {
				continue
			}
			held := slices.DeleteFunc(l.byName[name], func(h located) bool { return h.ServerID == loc.ServerID })
			if ev.Type == clientv3.EventTypePut {
				held = insert(held, loc)
			}
			if len(held) == 0 {
				delete(l.byName, name)
			} else {
				l.byName[name] = held
			}
		}
		l.mu.Unlock()
	}
	return answered
}

// parse returns the name and the location a key under the prefix says.
// A delete's kv has no create revision and no value, which it does not
// need.
func (l *Locator) parse(kv *mvccpb.KeyValue) (string, located, bool) {
	escName, escID, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), l.under), "/")
	if !ok || strings.Contains(escID, "/") {
		return "", located{}, false // not a key Publish wrote
	}
	name, err1 := url.PathUnescape(escName)
	id, err2 := url.PathUnescape(escID)
	if err1 != nil || err2 != nil {
		return "", located{}, false
	}
	return name, located{Location: Location{ServerID: id, Address: string(kv.Value)}, created: kv.CreateRevision}, true
}

// insert adds loc to held, which is newest first, in its place.
func insert(held []located, loc located) []located {
	i, _ := slices.BinarySearchFunc(held, loc, func(h, loc located) int { return cmp.Compare(loc.created, h.created) })
	return slices.Insert(held, i, loc)
}
