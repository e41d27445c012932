package mux

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The table of limits in RELIABILITY.md against the code.
// rpc/limits_test.go checks the rows of the call layer the same way.

// limitRow is one row of the table of limits.
type limitRow struct {
	name, layer, def, option string
}

// readLimitsTable returns the rows between the markers of the table of
// limits in RELIABILITY.md.
func readLimitsTable(t *testing.T) []limitRow {
	t.Helper()
	const begin, end = "<!-- limits:begin -->", "<!-- limits:end -->"
	doc, err := os.ReadFile("../RELIABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), begin)
	table, _, ok2 := strings.Cut(rest, end)
	if !ok || !ok2 {
		t.Fatal("RELIABILITY.md has no table of limits between its markers")
	}
	var rows []limitRow
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) >= 6 && cells[0] != "Limit" && !strings.HasPrefix(cells[0], "---") {
			rows = append(rows, limitRow{cells[0], cells[1], cells[2], cells[3]})
		}
	}
	return rows
}

// limitValue parses a Default cell: the value up to its first "(" or
// ";", a number with a unit, a product of such ("1000 × 256 KiB"), "off"
// (0) or "none" (-1). Sizes are in bytes, durations in nanoseconds.
func limitValue(t *testing.T, cell string) int64 {
	t.Helper()
	s := strings.ReplaceAll(cell, "`", "")
	if i := strings.IndexAny(s, "(;"); i >= 0 {
		s = s[:i]
	}
	switch s = strings.TrimSpace(s); s {
	case "off":
		return 0
	case "none":
		return -1
	}
	units := map[string]int64{
		"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
		"ms": int64(time.Millisecond), "s": int64(time.Second), "years": int64(365 * 24 * time.Hour),
	}
	v := int64(1)
	for _, factor := range strings.Split(s, "×") {
		num, unit, _ := strings.Cut(strings.TrimSpace(factor), " ")
		var n int64
		var err error
		if base, exp, ok := strings.Cut(num, "^"); ok {
			var b, e int
			if b, err = strconv.Atoi(base); err == nil {
				e, err = strconv.Atoi(exp)
			}
			n = 1
			for range e {
				n *= int64(b)
			}
		} else {
			n, err = strconv.ParseInt(num, 10, 64)
		}
		mult, known := units[unit]
		if err != nil || !known {
			t.Fatalf("cannot read the default %q", cell)
		}
		v *= n * mult
	}
	return v
}

// TestDocumentedDefaults checks each default the table of limits gives for
// the session layer against the code (Config's defaults, and the fixed
// bounds), and that every Config field but Transport has its row.
func TestDocumentedDefaults(t *testing.T) {
	d, err := (*Config)(nil).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := smuxConfig(d)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"Concurrent streams the peer may open":    int64(d.MaxIncomingStreams),
		"Peer streams the application holds":      int64(d.MaxIncomingStreams),
		"Peer streams queued for the application": 2 * int64(d.MaxIncomingStreams),
		"Stream window":                         int64(d.StreamWindow),
		"Input buffered for the peer's streams": int64(d.MaxIncomingStreams) * int64(d.StreamWindow),
		"Smux receive budget per session":       int64(sc.MaxReceiveBuffer),
		"Frame payload":                         int64(d.MaxFrameSize),
		"Control frame payload":                 maxControlPayload,
		"GoAway debug data":                     maxGoAwayDebug,
		"Data queued to send per session":       sendBufferLimit,
		"One stream's data in a batch":          sendQuantum,
		"Control frames queued beyond it":       controlBufferLimit,
		"Read buffer per session":               readBufferSize,
		"Handshake timeout":                     int64(d.HandshakeTimeout),
		"Keepalive interval":                    int64(d.KeepAliveInterval),
		"Keepalive timeout":                     int64(d.KeepAliveTimeout),
		"Close timeout":                         int64(d.CloseTimeout),
		"Idle timeout":                          int64(d.IdleTimeout),
		"Pending handshakes per Listener":       int64(d.MaxPendingHandshakes),
		"Sessions waiting for Accept":           maxReady,
		"Stream ids per session":                (maxStreamID + 1) / 2,
		"Smux client hello":                     smuxHelloMax,
		"Smux refused stream drain":             smuxRefuseDrain,
		"Protocol error GoAway wait":            int64(protocolErrorWait),
		"Smux admission status wait":            int64(smuxStatusWait),
		"Sessions per Listener or Server":       -1, // no bound: the table says how to get one
	}
	options := ""
	for _, r := range readLimitsTable(t) {
		if r.layer != "mux" {
			continue
		}
		options += r.option
		w, ok := want[r.name]
		if !ok {
			t.Errorf("the table has a row %q that this test does not know", r.name)
			continue
		}
		delete(want, r.name)
		if got := limitValue(t, r.def); got != w {
			t.Errorf("%s: the table says %q (%d), the code %d", r.name, r.def, got, w)
		}
	}
	for name := range want {
		t.Errorf("the table has no row %q", name)
	}
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		if f := ct.Field(i).Name; f != "Transport" && !strings.Contains(options, "`Config."+f+"`") {
			t.Errorf("no row of the table is configured by Config.%s", f)
		}
	}
}

// TestReliabilityNamesRealTests checks that every test and fuzz target
// RELIABILITY.md cites as proof exists in the repository, so that the
// document cannot keep citing a test that was renamed or removed.
func TestReliabilityNamesRealTests(t *testing.T) {
	doc, err := os.ReadFile("../RELIABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	var sources strings.Builder
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		sources.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	cited := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1)
	if len(cited) < 50 {
		t.Fatalf("RELIABILITY.md cites %d tests; is it the document of faults and attacks?", len(cited))
	}
	for _, m := range cited {
		if !strings.Contains(sources.String(), "func "+m[1]+"(") {
			t.Errorf("RELIABILITY.md cites %s, which no test file defines", m[1])
		}
	}
}
