package rpc

import (
	"context"
	"slices"
	"sync"
)

// A Directory lists a Server's peers by the Name of their Identity, as
// the Server's Authenticator established it: "the agent of customer 42"
// is a lookup, not a registry the application keeps. A peer is listed
// from the moment its session is admitted (once the welcome has gone to
// the client, so a moment after the client's Dial returns, and before
// OnPeer runs) until the session ends, and lookups leave it out from the
// moment it goes away (a GoAway either way); an agent that reconnects is listed again under the
// same name by its new session, with nothing to do on either side.
// Anonymous peers (an empty Name) are not listed. Get a Server's with
// Server.Directory. Conn calls the peer of a name, Fleet the peers that
// serve a service.
type Directory struct {
	policy    DuplicatePolicy
	srv       *Server
	unaryInt  UnaryClientInterceptor // the Server's client interceptors, run once per call by name or to a Fleet
	streamInt StreamClientInterceptor

	mu       sync.Mutex
	byName   map[string][]listing // the live peers of each name, oldest first
	joins    uint64               // counts joins: a listing's place in age
	watchers map[*watcher]struct{}
	fleets   map[string]*fleetSet // the member sets of the services Fleet was asked for
	changed  chan struct{}        // closed by the next join or leave, for calls that wait for a peer; nil while none waits
}

// listing is one session listed under a name.
type listing struct {
	peer *Peer
	seq  uint64 // the Directory's join count when it joined: lower is older
}

// A DuplicatePolicy says what a Directory does when a peer's session is
// admitted under a name another live session already has.
type DuplicatePolicy int

const (
	// KeepAll lists every session of a name; Lookup returns the newest
	// first, and calls by name go to the newest. The default.
	KeepAll DuplicatePolicy = iota
	// ReplaceOldest keeps the newest session of a name only: the older
	// ones leave the Directory at once and are shut down gracefully,
	// with a GoAway saying "replaced by a newer session", their calls in
	// flight finishing. Suits agents, whose new session means the old one
	// is dead or a duplicate.
	ReplaceOldest
)

// DuplicateIdentities sets the Server's Directory's DuplicatePolicy.
func DuplicateIdentities(p DuplicatePolicy) ServerOption {
	return serverOption(func(c *serverConfig) { c.duplicates = p })
}

// A DirectoryEvent is a peer joining or leaving a Directory.
type DirectoryEvent struct {
	Name   string
	Peer   *Peer
	Joined bool // false: the peer left
}

func newDirectory(srv *Server, policy DuplicatePolicy) *Directory {
	return &Directory{
		srv:       srv,
		policy:    policy,
		unaryInt:  chainUnaryClient(srv.cfg.peer.unaryClient),
		streamInt: chainStreamClient(srv.cfg.peer.streamClient),
		byName:    map[string][]listing{},
		watchers:  map[*watcher]struct{}{},
		fleets:    map[string]*fleetSet{},
	}
}

// Directory returns the Server's Directory of its peers.
func (s *Server) Directory() *Directory { return s.dir }

// Lookup returns the live peers listed under name, the newest first, or
// none.
func (d *Directory) Lookup(name string) []*Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	listed := d.byName[name]
	out := make([]*Peer, 0, len(listed))
	for i := len(listed) - 1; i >= 0; i-- {
		if p := listed[i].peer; !p.goingAway() {
			out = append(out, p)
		}
	}
	return out
}

// newestLocked returns the newest live peer listed under name, or nil.
func (d *Directory) newestLocked(name string) *Peer {
	listed := d.byName[name]
	for i := len(listed) - 1; i >= 0; i-- {
		if p := listed[i].peer; !p.goingAway() {
			return p
		}
	}
	return nil
}

// waitChange returns a channel closed by the next join or leave.
func (d *Directory) waitChange() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waitChangeLocked()
}

func (d *Directory) waitChangeLocked() <-chan struct{} {
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return d.changed
}

// changedLocked records that the sessions listed under name have
// changed: the one place that keeps the fleets' member sets in step with
// the listings, and that wakes the calls waiting for a peer.
func (d *Directory) changedLocked(name string) {
	for _, set := range d.fleets {
		set.refresh(name, d.byName[name])
	}
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
}

// Names returns the names listed, sorted.
func (d *Directory) Names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.byName))
	for name := range d.byName {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Len returns the number of names listed.
func (d *Directory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byName)
}

// Watch returns the Directory's events, in order: first a join for every
// peer listed now (the oldest first), then every join and leave as they
// happen, until ctx ends; then the channel is closed. A watcher that does
// not keep up delays nobody: its events queue for it.
func (d *Directory) Watch(ctx context.Context) <-chan DirectoryEvent {
	w := &watcher{wake: make(chan struct{}, 1)}
	out := make(chan DirectoryEvent)
	d.mu.Lock()
	for name, listed := range d.byName {
		for _, l := range listed {
			w.queue = append(w.queue, DirectoryEvent{Name: name, Peer: l.peer, Joined: true})
		}
	}
	d.watchers[w] = struct{}{}
	d.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			d.mu.Lock()
			delete(d.watchers, w)
			d.mu.Unlock()
		}()
		for {
			d.mu.Lock()
			queue := w.queue
			w.queue = nil
			d.mu.Unlock()
			for _, e := range queue {
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// watcher is one Watch's queue of events not yet delivered.
type watcher struct {
	queue []DirectoryEvent // guarded by the Directory's mu
	wake  chan struct{}    // a token when queue has grown
}

// notifyLocked queues e for every watcher.
func (d *Directory) notifyLocked(e DirectoryEvent) {
	for w := range d.watchers {
		w.queue = append(w.queue, e)
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// join lists p, admitted under its Identity's Name, and applies the
// DuplicatePolicy to the sessions it already has.
func (d *Directory) join(p *Peer) {
	name := p.Identity().Name
	if name == "" {
		return
	}
	d.mu.Lock()
	var replaced []listing
	if d.policy == ReplaceOldest {
		replaced = d.byName[name]
		delete(d.byName, name)
		for _, old := range replaced {
			d.notifyLocked(DirectoryEvent{Name: name, Peer: old.peer})
		}
	}
	live := !p.goingAway() // else the session went away before it was admitted, and leave may have run
	if live {
		d.joins++
		d.byName[name] = append(d.byName[name], listing{peer: p, seq: d.joins})
		d.notifyLocked(DirectoryEvent{Name: name, Peer: p, Joined: true})
	}
	if live || len(replaced) > 0 {
		d.changedLocked(name)
	}
	d.mu.Unlock()
	for _, old := range replaced {
		go old.peer.shutdownWithin(d.srv.halt, []byte("replaced by a newer session"))
	}
}

// leave unlists p, whose session has gone away, unless it has left
// already.
func (d *Directory) leave(p *Peer) {
	name := p.Identity().Name
	if name == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	listed := d.byName[name]
	i := slices.IndexFunc(listed, func(l listing) bool { return l.peer == p })
	if i < 0 {
		return
	}
	if listed = slices.Delete(listed, i, i+1); len(listed) == 0 {
		delete(d.byName, name)
	} else {
		d.byName[name] = listed
	}
	d.notifyLocked(DirectoryEvent{Name: name, Peer: p})
	d.changedLocked(name)
}
