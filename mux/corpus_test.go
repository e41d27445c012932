package mux

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The committed seed corpora of the fuzz targets (testdata/fuzz), read
// back: companion tests measure the decoders over them, and the worked
// examples of PROTOCOL.md must be among them byte for byte.

// fuzzCorpus reads the committed corpus of a fuzz target, in the `go test
// fuzz v1` format, as the values of each file. Under CI a target without a
// corpus fails the test.
func fuzzCorpus(t testing.TB, target string) [][]any {
	t.Helper()
	dir := "testdata/fuzz/" + target
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("no committed corpus for %s: %v", target, err)
		}
		t.Logf("no committed corpus for %s: %v", target, err)
		return nil
	}
	var out [][]any
	for _, e := range entries {
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		vals, err := parseCorpusFile(b)
		if err != nil {
			t.Fatalf("%s/%s: %v", dir, e.Name(), err)
		}
		out = append(out, vals)
	}
	return out
}

// parseCorpusFile decodes the values of a corpus file of the kinds the
// targets here take: []byte, bool and unsigned integers.
func parseCorpusFile(b []byte) ([]any, error) {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if lines[0] != "go test fuzz v1" {
		return nil, errors.New("not a `go test fuzz v1` file")
	}
	var vals []any
	for _, l := range lines[1:] {
		kind, lit, ok := strings.Cut(l, "(")
		if !ok || !strings.HasSuffix(lit, ")") {
			return nil, fmt.Errorf("%q: not a typed value", l)
		}
		lit = lit[:len(lit)-1]
		var v any
		var err error
		switch kind {
		case "[]byte":
			var s string
			s, err = strconv.Unquote(lit)
			v = []byte(s)
		case "bool":
			v, err = strconv.ParseBool(lit)
		case "uint8", "byte", "uint16", "uint32", "uint64":
			var n uint64
			if len(lit) >= 3 && lit[0] == '\'' { // Go writes a byte as a character literal
				var r rune
				r, _, _, err = strconv.UnquoteChar(lit[1:len(lit)-1], '\'')
				n = uint64(r)
			} else {
				n, err = strconv.ParseUint(lit, 0, 64)
			}
			v = map[string]any{"uint8": uint8(n), "byte": uint8(n), "uint16": uint16(n), "uint32": uint32(n), "uint64": n}[kind]
		default:
			err = fmt.Errorf("unsupported type %s", kind)
		}
		if err != nil {
			return nil, fmt.Errorf("%q: %w", l, err)
		}
		vals = append(vals, v)
	}
	return vals, nil
}

// protocolHex returns the byte sequences PROTOCOL.md writes out in hex in
// its conventions and part one: each code block's lines of hex (up to the
// first word that is not a hex byte; "client:" and "server:" lines on
// their own), and each hex span in backquotes.
func protocolHex(t *testing.T) [][]byte {
	t.Helper()
	doc, err := os.ReadFile("../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	from, to := strings.Index(text, "## Conventions"), strings.Index(text, "## Part two")
	if from < 0 || to < from {
		t.Fatal("PROTOCOL.md: no conventions or no part two")
	}
	text = text[from:to]
	isHex := regexp.MustCompile(`^[0-9a-f]{2}$`)
	decode := func(tokens []string) []byte {
		var b []byte
		for _, tok := range tokens {
			if !isHex.MatchString(tok) {
				break
			}
			v, _ := strconv.ParseUint(tok, 16, 8)
			b = append(b, byte(v))
		}
		return b
	}
	var seqs [][]byte
	for _, span := range regexp.MustCompile("`([0-9a-f]{2}(?: [0-9a-f]{2})*)`").FindAllStringSubmatch(text, -1) {
		seqs = append(seqs, decode(strings.Fields(span[1])))
	}
	blocks := strings.Split(text, "```")
	for i := 1; i < len(blocks); i += 2 {
		var cur []byte
		flush := func() {
			if len(cur) > 0 {
				seqs = append(seqs, cur)
			}
			cur = nil
		}
		for _, line := range strings.Split(blocks[i], "\n") {
			tokens := strings.Fields(line)
			labelled := len(tokens) > 0 && (tokens[0] == "client:" || tokens[0] == "server:")
			if labelled {
				flush()
				tokens = tokens[1:]
			}
			b := decode(tokens)
			if len(b) == 0 {
				flush()
				continue
			}
			cur = append(cur, b...)
			if labelled {
				flush()
			}
		}
		flush()
	}
	return seqs
}

// TestProtocolExamplesInCorpus checks that every byte sequence PROTOCOL.md
// gives in hex in part one, the worked example of §11 above all (the
// 35-byte handshake, the request and response frames, the GOAWAYs of the
// shutdown and of the protocol error), is, byte for byte, in the committed
// corpus of a fuzz target.
func TestProtocolExamplesInCorpus(t *testing.T) {
	entries, err := os.ReadDir("testdata/fuzz")
	if err != nil {
		t.Fatal(err)
	}
	var corpus [][]byte
	for _, e := range entries {
		for _, vals := range fuzzCorpus(t, e.Name()) {
			for _, v := range vals {
				if b, ok := v.([]byte); ok {
					corpus = append(corpus, b)
				}
			}
		}
	}
	seqs := protocolHex(t)
	handshake := append(appendPreface(nil), appendSettings(nil, settings{maxIncomingStreams: 1000, initialWindow: 262144, maxFrameSize: 65536})...)
	if !slicesContain(seqs, handshake) {
		t.Fatalf("PROTOCOL.md's hex does not hold the 35-byte handshake of §11, % x; found %d sequences", handshake, len(seqs))
	}
	for _, seq := range seqs {
		found := false
		for _, b := range corpus {
			if bytes.Contains(b, seq) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("PROTOCOL.md gives % x, which no committed corpus file holds", seq)
		}
	}
	t.Logf("%d hex sequences of PROTOCOL.md found in %d corpus values", len(seqs), len(corpus))
}

func slicesContain(seqs [][]byte, want []byte) bool {
	for _, s := range seqs {
		if bytes.Equal(s, want) {
			return true
		}
	}
	return false
}

// TestUnitDecoderAllocation runs the unit decoders of what a peer sends
// over the committed corpora of their fuzz targets and over inputs of the
// largest sizes allowed: the preface, frame header and SETTINGS decoders
// allocate nothing for valid input, and readSmuxHello, which reads at most
// 64 bytes, allocates at most 1 KiB (its buffer, the hello's copy, or an
// error quoting at most those bytes) whatever it is given, a megabyte
// included.
func TestUnitDecoderAllocation(t *testing.T) {
	allocs := func(f func()) float64 { return testing.AllocsPerRun(10, f) }
	prefaces := [][]byte{appendPreface(nil)}
	for _, c := range fuzzCorpus(t, "FuzzCheckPreface") {
		prefaces = append(prefaces, c[0].([]byte))
	}
	for _, b := range prefaces {
		if len(b) >= prefaceLen && checkPreface(b) == nil {
			if n := allocs(func() { checkPreface(b) }); n != 0 {
				t.Errorf("checkPreface(% x) allocates %v times", b, n)
			}
		}
	}
	for _, c := range fuzzCorpus(t, "FuzzParseFrameHeader") {
		b, max := c[0].([]byte), c[1].(uint32)
		if _, err := parseFrameHeader(b, max); len(b) >= frameHeaderLen && err == nil {
			if n := allocs(func() { parseFrameHeader(b, max) }); n != 0 {
				t.Errorf("parseFrameHeader(% x) allocates %v times", b, n)
			}
		}
	}
	var full []byte // the largest SETTINGS payload: 2 730 entries
	for i := range maxControlPayload / settingLen {
		full = appendSetting(full, uint16(i%4), 1<<20)
	}
	payloads := [][]byte{nil, full}
	for _, c := range fuzzCorpus(t, "FuzzParseSettings") {
		payloads = append(payloads, c[0].([]byte))
	}
	for _, p := range payloads {
		if _, err := parseSettings(p); err == nil {
			if n := allocs(func() { parseSettings(p) }); n != 0 {
				t.Errorf("parseSettings of a valid %d-byte payload allocates %v times", len(p), n)
			}
		}
	}
	hellos := [][]byte{smuxClientHello(1 << 40), bytes.Repeat(smuxFrame(nil, smuxNOP, 0, nil), 100), bytes.Repeat([]byte{2}, 1<<20)}
	for _, c := range fuzzCorpus(t, "FuzzSmuxHello") {
		hellos = append(hellos, c[0].([]byte))
	}
	for _, b := range hellos {
		r := bytes.NewReader(b)
		if n := bytesAllocated(func() { readSmuxHello(r) }); n > 16*smuxHelloMax {
			t.Errorf("readSmuxHello of % .40x (%d bytes) allocates %d bytes", b, len(b), n)
		}
	}
}
