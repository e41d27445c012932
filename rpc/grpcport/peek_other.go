//go:build !unix

package grpcport

import "net"

// peek is not available here: sniff reads the first bytes and replays
// them.
func peek(net.Conn, *[sniffLen]byte) (protocol, error) { return unknown, errNoPeek }
