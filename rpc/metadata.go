package rpc

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata follows gRPC's rules (PROTOCOL.md, section 14). A key is
// non-empty and made of [0-9a-z-_.], so lower-case; the values of a key
// that does not end in "-bin" are printable ASCII (0x20-0x7E), those of a
// "-bin" key any bytes. Reserved keys never travel. A side that is asked
// to send metadata breaking the rules fails with codes.Internal, as
// gRPC-Go does; one that receives such metadata treats the part as
// malformed.

// noMetadata is the incoming metadata of calls that carry none, so that
// metadata.FromIncomingContext reports it as gRPC does: present and
// empty. One map serves every call: the metadata package hands out only
// copies of it, so no handler can change it.
var noMetadata = metadata.MD{}

// reservedKey reports whether key belongs to gRPC's protocol rather than
// to the application: HTTP/2 pseudo-headers and the headers gRPC-Go's
// transport reserves for itself. Such keys are dropped, never sent, and
// ignored when received.
func reservedKey(key string) bool {
	if strings.HasPrefix(key, ":") {
		return true
	}
	switch key {
	case "content-type", "te",
		"grpc-encoding", "grpc-message", "grpc-message-type", "grpc-status", "grpc-timeout":
		return true
	}
	return false
}

// checkMetadata returns a status error with code Internal naming the
// first pair of md that may not be sent. Reserved keys pass: they are
// dropped when the metadata is sent.
func checkMetadata(md metadata.MD) error {
	for k, vs := range md {
		if reservedKey(k) {
			continue
		}
		if err := checkPair(k, vs...); err != nil {
			return status.Error(codes.Internal, "rpc: "+err.Error())
		}
	}
	return nil
}

// checkPair says what breaks the rules of metadata in key and its
// values, or returns nil.
func checkPair(key string, values ...string) error {
	if key == "" {
		return errors.New("metadata key is empty")
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("metadata key %q contains illegal characters not in [0-9a-z-_.]", key)
		}
	}
	if strings.HasSuffix(key, "-bin") {
		return nil
	}
	for _, v := range values {
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				return fmt.Errorf("metadata key %q has a value with characters that are not printable ASCII", key)
			}
		}
	}
	return nil
}
