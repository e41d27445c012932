package rpc

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// specStrings is the strings of a repeated string field of the oracle,
// with invalid UTF-8 replaced, as a receiver keeps them.
func specStrings(l protoreflect.List) []string {
	var out []string
	for i := range l.Len() {
		out = append(out, strings.ToValidUTF8(string(l.Get(i).Bytes()), "\uFFFD"))
	}
	return out
}

// FuzzSessionHello decodes arbitrary bytes as the payload of a HELLO and
// of a WELCOME. The decoder accepts exactly what PROTOCOL.md section 19's
// Hello and Welcome accept with a version and, in a HELLO, metadata by the
// rules of section 14 (and a WELCOME's code within a status code's
// range): the same version, metadata, services and status. It rejects
// the rest with a clear errMalformed, and more than maxServices services
// with ResourceExhausted. What it accepts, the encoder makes back into one
// part that decodes to the same.
func FuzzSessionHello(f *testing.F) {
	f.Add(appendHello(nil, metadata.Pairs("agent-id", "a1", "x-bin", "\x00"), []string{"b.S", "a.S"})[partPrefixLen:])
	f.Add(appendWelcome(nil, status.New(codes.Unauthenticated, "bad \xff token"), nil)[partPrefixLen:])
	f.Add(appendWelcome(nil, status.New(codes.OK, ""), []string{"test.Echo"})[partPrefixLen:])
	f.Add([]byte{})
	f.Add(protowire.AppendVarint(protowire.AppendTag(nil, fieldHelloVersion, protowire.VarintType), 1<<40))
	f.Add(appendEntries(protowire.AppendVarint([]byte{0x08}, 1), fieldHelloMetadata, "Upper", "v"))
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, welcome := range []bool{false, true} {
			h, err := parseHello(p, welcome)
			name := protoreflect.Name("Hello")
			if welcome {
				name = "Welcome"
			}
			if !welcome && overEntryLimit(t, err, p, fieldHelloMetadata) {
				continue
			}
			if status.Code(err) == codes.ResourceExhausted {
				continue // more than maxServices: the oracle has no bound
			}
			spec, specErr := specMessage(t, name, p)
			var wantMD metadata.MD
			wantOK := specErr == nil && get(spec, "version").Uint() != 0
			if wantOK && !welcome {
				wantMD, wantOK = specMetadata(get(spec, "metadata").List())
			}
			if wantOK && welcome {
				wantOK = get(spec, "code").Uint() <= 1<<31-1
			}
			if err != nil {
				wantMalformed(t, err, p)
				if wantOK {
					t.Fatalf("% x as a %s: rejected with %v; the spec accepts it", p, name, err)
				}
				continue
			}
			if !wantOK {
				if specErr != nil && beyondFieldNumbers(p, fieldHelloMetadata) {
					continue
				}
				t.Fatalf("% x as a %s: accepted as %+v; the spec rejects it (%v)", p, name, h, specErr)
			}
			services := specStrings(get(spec, "services").List())
			version := uint32(min(get(spec, "version").Uint(), 1<<32-1))
			if h.version != version || !slices.Equal(h.services, services) || !sameMD(h.md, wantMD) {
				t.Fatalf("% x as a %s: decoded %+v; the spec says version %d, services %q, metadata %v", p, name, h, version, services, wantMD)
			}
			if welcome {
				code, msg := codes.Code(get(spec, "code").Uint()), strings.ToValidUTF8(string(get(spec, "message").Bytes()), "\uFFFD")
				if h.code != code || h.message != msg {
					t.Fatalf("% x as a Welcome: decoded %v %q; the spec says %v %q", p, h.code, h.message, code, msg)
				}
				again, err := parseHello(wantPart(t, appendWelcome(nil, status.New(h.code, h.message), h.services), partWelcome), true)
				if err != nil || again.code != h.code || (h.code != codes.OK && again.message != h.message) || !slices.Equal(again.services, h.services) {
					t.Fatalf("%+v encoded and decoded again: %+v, %v", h, again, err)
				}
				continue
			}
			again, err := parseHello(wantPart(t, appendHello(nil, h.md, h.services), partHello), false)
			if err != nil || !sameMD(again.md, h.md) || !slices.Equal(again.services, h.services) {
				t.Fatalf("%+v encoded and decoded again: %+v, %v", h, again, err)
			}
		}
	})
}
