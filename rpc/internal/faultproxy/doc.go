// Package faultproxy is a TCP proxy for tests that breaks the connections
// it carries on command: its one concept is a link between a client and a
// target that a test can damage while the link is in use.
//
// A [Proxy] listens on a loopback port; each connection it accepts is
// paired with a new connection to the target, and bytes are forwarded
// both ways. Faults name the end they reach with a [Direction]: ToTarget
// is the target's end (the bytes the client sends, the target's socket),
// ToClient the client's end. A test can then
//
//   - cut every connection, abortively ([RST]: SO_LINGER 0, then close, so
//     the peer gets a reset) or gracefully ([FIN]: a half-close, then
//     whatever the peer still sends is read and dropped until it closes),
//     toward one end or both ([Proxy.Cut]);
//   - make the link go silent, sockets open but nothing forwarded
//     ([Proxy.Silence]);
//   - throttle it to a number of bytes per second with a token bucket
//     ([Proxy.Throttle]);
//   - deliver the bytes in pieces: one at a time, of random small sizes, or
//     at boundaries a [Splitter] chooses, each piece in its own write
//     ([Proxy.Split]).
//
// Without faults the proxy is transparent: a peer's half-close reaches the
// other end as a half-close, a reset as a reset. [Proxy.Stats] counts the
// bytes and writes forwarded, so a test can check that a fault did apply.
//
// The package is internal to rpc so that the call layer's tests (and those
// of packages beneath rpc/) can share it; it knows nothing of muxrpc's
// protocols: a Splitter that cuts at frame boundaries lives with the tests
// that know the frames.
package faultproxy
