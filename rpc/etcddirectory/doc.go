// Package etcddirectory publishes an rpc.Server's Directory to etcd, so
// that a fleet of servers can answer "which server holds agent K": agents
// connect to any of N servers, and a server that needs to call K asks
// etcd with [Locate] and forwards the call to the one that has it.
//
// [Publish] keeps one key per name the Directory lists, under a prefix:
//
//	<Prefix>/<name>/<ServerID> -> Address
//
// with name and ServerID escaped by url.PathEscape, so that a name with a
// slash in it cannot pass for another's. All of a server's keys hang on
// one lease that Publish keeps alive: a server that dies, or loses etcd
// for longer than the lease's TTL, has its keys vanish when the lease
// expires, and a server that shuts down cleanly revokes it, so that its
// keys vanish at once. Joins and leaves become puts and deletes as they
// happen, gathered into transactions when many come at once. A lost
// lease (expired while etcd was out of reach, or revoked by someone
// else) is replaced by a new one under which the whole Directory is
// published again.
//
// A name held by several servers (during a move, or while an agent's old
// session lingers) has a key for each; [Locate] returns them newest
// first, with one read of etcd, and a [Locator] answers the same from a
// copy that an etcd watch keeps current, with none. The key says where
// the name is now: a caller that forwards there may still find it gone,
// and should treat that as it would any other vanished peer.
//
// The package is a module of its own, so that users of muxrpc who do
// not use etcd do not inherit its client.
package etcddirectory
