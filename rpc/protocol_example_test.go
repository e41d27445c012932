package rpc

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// workedExample returns the bytes of the three dumps of PROTOCOL.md
// section 18, read from the document: the caller's parts of the unary
// call, the callee's answer, and the trailer of a failed call. Each line
// of a dump holds bytes in hex, then a comment.
func workedExample(t testing.TB) (caller, callee, failed []byte) {
	t.Helper()
	doc, err := os.ReadFile("../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "### 18.")
	if !ok {
		t.Fatal("PROTOCOL.md has no section 18")
	}
	section, _, _ = strings.Cut(section, "### 19.")
	dumps := hexDumps(section)
	if len(dumps) != 3 {
		t.Fatalf("PROTOCOL.md section 18 has %d dumps, want 3", len(dumps))
	}
	return dumps[0], dumps[1], dumps[2]
}

// hexDumps returns the bytes of each code block of section: each line of
// a dump holds bytes in hex, then a comment.
func hexDumps(section string) [][]byte {
	hexByte := regexp.MustCompile(`^[0-9a-f]{2}$`)
	var dumps [][]byte
	for _, block := range regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if block[1] != "" {
			continue // a block in a language (proto) is no dump
		}
		var b []byte
		for _, line := range strings.Split(block[2], "\n") {
			for _, tok := range strings.Fields(line) {
				if !hexByte.MatchString(tok) {
					break
				}
				v, _ := strconv.ParseUint(tok, 16, 8)
				b = append(b, byte(v))
			}
		}
		dumps = append(dumps, b)
	}
	return dumps
}

// corpusBytes returns the first value, a []byte, of a seed corpus file
// of testdata/fuzz, in the "go test fuzz v1" format.
func corpusBytes(t *testing.T, target, name string) []byte {
	t.Helper()
	file := filepath.Join("testdata", "fuzz", target, name)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s is not a corpus file", file)
	}
	lit, ok := strings.CutPrefix(lines[1], "[]byte(")
	lit, ok2 := strings.CutSuffix(lit, ")")
	v, err := strconv.Unquote(lit)
	if !ok || !ok2 || err != nil {
		t.Fatalf("%s: first value %q is not a []byte literal", file, lines[1])
	}
	return []byte(v)
}

// TestProtocolWorkedExample checks the worked example of PROTOCOL.md
// section 18 against the package, byte for byte: its encoders make the
// dumps from the values the section names, its decoders read those
// values back from the dumps, and the seed corpora of the fuzz targets
// hold the dumps, or their payloads, exactly.
func TestProtocolWorkedExample(t *testing.T) {
	caller, callee, failed := workedExample(t)

	req, err := appendMessage(nil, wrapperspb.String("hi"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantCaller := rawParts(appendCallHeader(nil, "/test.Echo/Unary", 1500*time.Millisecond, 0, metadata.Pairs("k", "v"), ""), req, appendEmptyPart(nil, partClientEnd))
	resp, err := appendMessage(nil, wrapperspb.String("ok"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantCallee := rawParts(resp, appendTrailer(nil, &trailer{}))
	wantFailed := appendTrailer(nil, &trailer{code: codes.NotFound, message: "no"})
	for _, c := range []struct {
		name      string
		doc, want []byte
	}{{"caller's parts", caller, wantCaller}, {"callee's answer", callee, wantCallee}, {"failed call", failed, wantFailed}} {
		if !bytes.Equal(c.doc, c.want) {
			t.Errorf("%s: PROTOCOL.md has\n% x\nthe encoders make\n% x", c.name, c.doc, c.want)
		}
	}

	parts, end, _, _ := specSplit(caller, 1<<20, defaultMaxHeaderListSize)
	if end != endClean || len(parts) != 3 || parts[0].kind != partCallHeader || parts[1].kind != partMessage || parts[2].kind != partClientEnd {
		t.Fatalf("the caller's parts split into %v, ending %d", parts, end)
	}
	h, err := parseCallHeader(parts[0].payload)
	if err != nil || string(h.method) != "/test.Echo/Unary" || h.timeout != 1500*time.Millisecond || !sameMD(h.md, metadata.Pairs("k", "v")) {
		t.Errorf("the call header decodes as %q, %v, %v, %v", h.method, h.timeout, h.md, err)
	}
	in := new(wrapperspb.StringValue)
	if err := decodeMessage(parts[1].payload, in); err != nil || in.Value != "hi" {
		t.Errorf("the request decodes as %v, %v", in, err)
	}
	parts, end, _, _ = specSplit(failed, 1<<20, defaultMaxHeaderListSize)
	if end != endClean || len(parts) != 1 || parts[0].kind != partTrailer {
		t.Fatalf("the failed call's answer splits into %v, ending %d", parts, end)
	}
	tl, err := parseTrailer(parts[0].payload)
	if err != nil || tl.code != codes.NotFound || tl.message != "no" {
		t.Errorf("the failed call's trailer decodes as %+v, %v", tl, err)
	}
	wantStatus(t, tl.err(), codes.NotFound, "no")

	for _, c := range []struct {
		target, name string
		want         []byte
	}{
		{"FuzzCallHeader", "protocol-18-call-header", caller[5:35]},
		{"FuzzMetadataEntry", "protocol-18-entry", caller[29:35]},
		{"FuzzResponseHeader", "protocol-18-entry", append([]byte{0x0a, 0x06}, caller[29:35]...)}, // the entry, as field 1
		{"FuzzTrailer", "protocol-18-ok", []byte{}},                                               // the callee's trailer
		{"FuzzTrailer", "protocol-18-not-found", failed[5:]},
		{"FuzzPartStream", "protocol-18-caller", caller},
		{"FuzzPartStream", "protocol-18-callee", callee},
		{"FuzzPartStream", "protocol-18-not-found", failed},
		{"FuzzCallee", "protocol-18-caller", caller},
		{"FuzzCaller", "protocol-18-callee", callee},
		{"FuzzCaller", "protocol-18-not-found", failed},
	} {
		if got := corpusBytes(t, c.target, c.name); !bytes.Equal(got, c.want) {
			t.Errorf("testdata/fuzz/%s/%s holds\n% x\nPROTOCOL.md has\n% x", c.target, c.name, got, c.want)
		}
	}
}

// TestSessionHelloExample checks the dumps of PROTOCOL.md section 19
// against the encoder, and decodes them: a HELLO, a WELCOME that admits,
// and one that refuses.
func TestSessionHelloExample(t *testing.T) {
	doc, err := os.ReadFile("../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "### 19.")
	if !ok {
		t.Fatal("PROTOCOL.md has no section 19")
	}
	dumps := hexDumps(section)
	if len(dumps) != 3 {
		t.Fatalf("PROTOCOL.md section 19 has %d dumps, want 3", len(dumps))
	}
	want := [][]byte{
		appendHello(nil, metadata.Pairs("agent-id", "a1"), []string{"test.Callbacks"}),
		appendWelcome(nil, status.New(codes.OK, ""), []string{"test.Echo"}),
		appendWelcome(nil, status.New(codes.Unauthenticated, "bad token"), nil),
	}
	for i, w := range want {
		if !bytes.Equal(dumps[i], w) {
			t.Errorf("dump %d of section 19:\n got % x\nwant % x", i, dumps[i], w)
		}
	}
	h, err := parseHello(dumps[0][partPrefixLen:], false)
	if err != nil || h.version != 1 || h.md.Get("agent-id")[0] != "a1" || len(h.services) != 1 || h.services[0] != "test.Callbacks" {
		t.Errorf("the HELLO decodes as %+v, %v", h, err)
	}
	w, err := parseHello(dumps[1][partPrefixLen:], true)
	if err != nil || w.version != 1 || w.code != codes.OK || len(w.services) != 1 || w.services[0] != "test.Echo" {
		t.Errorf("the admitting WELCOME decodes as %+v, %v", w, err)
	}
	w, err = parseHello(dumps[2][partPrefixLen:], true)
	if err != nil || w.code != codes.Unauthenticated || w.message != "bad token" {
		t.Errorf("the refusing WELCOME decodes as %+v, %v", w, err)
	}
}
