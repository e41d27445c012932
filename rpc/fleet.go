package rpc

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
)

// A Fleet is every peer of a Directory that serves one service, called as
// one: the agents that announced the service in their session hello
// (WithServices), each a member under its Identity's Name. It is a
// ClientConnInterface, so generated clients work on it as on a Peer, and
// each call goes to one member, chosen by the Fleet's Balancer:
//
//   - RoundRobin: the next member in turn;
//   - LeastOutstanding: the less busy of two members chosen at random,
//     counting the calls the server has in flight to each;
//   - PickFirst: the oldest member, the one whose session joined first.
//
// A call with StickyKey(key) goes instead to the member that key belongs
// to, whatever the Balancer: see StickyKey.
//
// A member is a name, not a session: a name listed with several sessions
// (KeepAll) is one member, whose calls go to its newest session that
// serves the service. A member joins when such a session is admitted and
// leaves when its last such session goes away; the Directory moves the
// Fleet's member set on each join and leave, so that choosing a member
// takes no lock and allocates nothing.
//
// With no member, a call fails at once with Unavailable, or, with
// WaitForReady(true), waits until one joins or its context ends. A call
// that fails because its member's session went away before processing it
// (IsRetrySafe) goes to the member chosen next, as through a NamedConn.
// The Server's client interceptors run once per call, with the Fleet as
// their ClientConnInterface. FanOut calls every member at once.
type Fleet struct {
	set      *fleetSet
	d        *Directory
	balancer Balancer
	turn     atomic.Uint32 // RoundRobin's position
	invoker  UnaryInvoker  // invoke, made once so that calls through interceptors do not allocate it
	streamer Streamer
}

// Fleet returns the Fleet of the peers that serve service, calling them
// by b. Fleets of one service share their member set, which the
// Directory keeps from the first call for that service on, for as long
// as it lives: ask for a few services, not one per request.
func (d *Directory) Fleet(service string, b Balancer) *Fleet {
	d.mu.Lock()
	set := d.fleets[service]
	if set == nil {
		set = &fleetSet{service: service}
		set.members.Store(&fleetMembers{})
		for name, listed := range d.byName {
			set.refresh(name, listed)
		}
		d.fleets[service] = set
	}
	d.mu.Unlock()
	f := &Fleet{set: set, d: d, balancer: b}
	f.invoker, f.streamer = f.invoke, f.newStream
	return f
}

// Service returns the service the Fleet's members serve.
func (f *Fleet) Service() string { return f.set.service }

// Peers returns the session each member's calls go to now, in the order
// of the members' names.
func (f *Fleet) Peers() []*Peer {
	ms := f.set.members.Load()
	peers := make([]*Peer, 0, len(ms.list))
	for _, m := range ms.list {
		if !m.peer.goingAway() {
			peers = append(peers, m.peer)
		}
	}
	return peers
}

// Len returns the number of members, as Peers counts them.
func (f *Fleet) Len() int {
	n := 0
	for _, m := range f.set.members.Load().list {
		if !m.peer.goingAway() {
			n++
		}
	}
	return n
}

// Invoke makes a unary call to one member; see Fleet.
func (f *Fleet) Invoke(ctx context.Context, method string, req, reply any, opts ...CallOption) error {
	if f.d.unaryInt != nil {
		return f.d.unaryInt(ctx, method, req, reply, f, f.invoker, opts...)
	}
	return f.invoke(ctx, method, req, reply, f, opts...)
}

func (f *Fleet) invoke(ctx context.Context, method string, req, reply any, _ ClientConnInterface, opts ...CallOption) error {
	return invokeOn(ctx, f, method, req, reply, opts)
}

// NewStream begins a streaming call to one member; see Fleet.
func (f *Fleet) NewStream(ctx context.Context, desc *StreamDesc, method string, opts ...CallOption) (ClientStream, error) {
	if f.d.streamInt != nil {
		return f.d.streamInt(ctx, desc, f, method, f.streamer, opts...)
	}
	return f.newStream(ctx, desc, f, method, opts...)
}

func (f *Fleet) newStream(ctx context.Context, desc *StreamDesc, _ ClientConnInterface, method string, opts ...CallOption) (ClientStream, error) {
	return newStreamOn(ctx, f, desc, method, opts)
}

func (f *Fleet) directory() *Directory { return f.d }

func (f *Fleet) describe() string { return "peer serving " + f.set.service }

// choose returns the live member a call with opts goes to, or nil. A
// member whose session has gone away, but has not left the set yet, is
// passed over as if it had left.
func (f *Fleet) choose(opts []CallOption) *Peer {
	ms := f.set.members.Load()
	n := len(ms.list)
	if n == 0 {
		return nil
	}
	if key, ok := stickyKeyOf(opts); ok {
		return ms.owner(key)
	}
	var p *Peer
	switch f.balancer {
	case RoundRobin:
		p = ms.list[f.turn.Add(1)%uint32(n)].peer
	case LeastOutstanding:
		p = ms.lessBusy()
	default:
		p = ms.list[ms.oldest].peer
	}
	if !p.goingAway() {
		return p
	}
	return ms.anyLive(f.balancer == PickFirst)
}

// StickyKey sends a call to a Fleet to the member that key belongs to,
// whatever the Fleet's Balancer: every call with the same key goes to the
// same member for as long as that member stays in the Fleet, so that a
// member can keep state per key (a session, a cache, a lock).
//
// The key belongs to the member with the highest weight for it, a hash
// of the key and the member's name (rendezvous hashing), among the
// members at the moment of the call. It takes no table, so every key is
// stable without the Fleet remembering any, and the same names give the
// same owners in every process. Membership moves keys only where it must:
// when a member leaves, its keys move each to the member that weighs
// next for them, and no other key moves; when a member joins (a new
// agent, or one that comes back after leaving), it takes over exactly
// the keys for which it weighs highest, from whichever members held them
// (about 1/n of all keys for n members), and no other key moves. An agent
// that reconnects before its old session leaves (KeepAll) stays a member
// throughout, and keeps its keys. A call with the key that finds its
// member's session gone away goes to the member that owns the key
// without it. Finding the owner weighs every member: 2 to 3 µs a call
// for 1,000 members (BenchmarkServerToAgents), against 20 ns for
// RoundRobin. On a NamedConn, a Peer or a Client the option does
// nothing.
func StickyKey(key string) CallOption { return stickyKey(key) }

// stickyKey is StickyKey's option: a type of its own, for a Fleet to find
// among a call's options.
type stickyKey string

// stickyKeyOf returns the StickyKey among opts, the last if several.
func stickyKeyOf(opts []CallOption) (string, bool) {
	key, found := "", false
	for _, o := range opts {
		if k, ok := o.(stickyKey); ok {
			key, found = string(k), true
		}
	}
	return key, found
}

// A fleetSet is the members of the Fleets of one service. The Directory
// replaces its snapshot, under its lock, on every join and leave of a
// name (refresh); calls read the snapshot without a lock.
type fleetSet struct {
	service string
	members atomic.Pointer[fleetMembers]
}

// fleetMembers is one snapshot of a fleetSet, never changed once stored.
type fleetMembers struct {
	list   []member // sorted by name
	oldest int      // the index of the member whose session joined first
}

// A member is one name of a Fleet and the session its calls go to.
type member struct {
	name string
	hash uint64 // of name, for rendezvous hashing
	peer *Peer
	seq  uint64 // the listing's place in age
}

// refresh makes the set's member for name agree with listed, the
// sessions the Directory lists under name now, oldest first: the newest
// of them that serves the service, or none. The Directory calls it, with
// its lock held, on every join and leave.
func (s *fleetSet) refresh(name string, listed []listing) {
	var next *listing
	for i := len(listed) - 1; i >= 0; i-- {
		if listed[i].peer.ServesRemotely(s.service) {
			next = &listed[i]
			break
		}
	}
	old := s.members.Load()
	i, found := slices.BinarySearchFunc(old.list, name, func(m member, name string) int { return strings.Compare(m.name, name) })
	var list []member
	switch {
	case next != nil && found && old.list[i].peer == next.peer:
		return
	case next != nil && found:
		list = slices.Clone(old.list)
		list[i].peer, list[i].seq = next.peer, next.seq
	case next != nil:
		list = slices.Insert(slices.Clip(old.list), i, member{name: name, hash: hashString(name), peer: next.peer, seq: next.seq})
	case found:
		list = slices.Delete(slices.Clone(old.list), i, i+1)
	default:
		return
	}
	ms := &fleetMembers{list: list}
	for j := range list {
		if list[j].seq < list[ms.oldest].seq {
			ms.oldest = j
		}
	}
	s.members.Store(ms)
}

// owner returns the live member with the highest rendezvous weight for
// key, or nil. The first pass ignores liveness, so that the usual call
// checks one session; a member gone away but not yet left costs a
// second pass without it.
func (ms *fleetMembers) owner(key string) *Peer {
	kh := hashString(key)
	best, bestW := -1, uint64(0)
	for i := range ms.list {
		if w := weight(kh, ms.list[i].hash); best < 0 || w > bestW {
			best, bestW = i, w
		}
	}
	if p := ms.list[best].peer; !p.goingAway() {
		return p
	}
	best = -1
	for i := range ms.list {
		if w := weight(kh, ms.list[i].hash); (best < 0 || w > bestW) && !ms.list[i].peer.goingAway() {
			best, bestW = i, w
		}
	}
	if best < 0 {
		return nil
	}
	return ms.list[best].peer
}

// lessBusy returns the one of two members chosen at random that has
// fewer calls in flight, by leastOutstanding's rule.
func (ms *fleetMembers) lessBusy() *Peer {
	n := len(ms.list)
	if n == 1 {
		return ms.list[0].peer
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := ms.list[i].peer, ms.list[j].peer
	if b.outgoing.Load() < a.outgoing.Load() {
		return b
	}
	return a
}

// anyLive returns a live member after the one chosen had gone away: the
// oldest live one, or with !oldest the first live one from a random
// place; nil if none lives.
func (ms *fleetMembers) anyLive(oldest bool) *Peer {
	n := len(ms.list)
	start := rand.IntN(n)
	var found *member
	for k := range n {
		m := &ms.list[(start+k)%n]
		if m.peer.goingAway() {
			continue
		}
		if !oldest {
			return m.peer
		}
		if found == nil || m.seq < found.seq {
			found = m
		}
	}
	if found == nil {
		return nil
	}
	return found.peer
}

// hashString is 64-bit FNV-1a, finished by mix: fixed, so that keys
// belong to the same names in every process.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix(h)
}

// weight is a member's rendezvous weight for a key, from their hashes.
func weight(key, name uint64) uint64 { return mix(key ^ name) }

// mix is SplitMix64's finalizer: every bit of x moves every bit of the
// result, so that weights of one key over different names are
// independent.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
