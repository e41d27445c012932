package grpcport

import "testing"

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		in   string
		full bool
		want protocol
	}{
		{"", false, unknown},
		{"MUXR", false, unknown},
		{"MUXRPC\x00\x01", false, muxrpcProtocol},
		{"MUXRPC\x00\x02", false, muxrpcProtocol}, // another version: mux says so
		{"PRI * ", false, unknown},
		{"PRI * HT", false, http2Protocol},
		{"PRI * ", true, http2Protocol}, // gRPC-Go's server rejects what is short
		{"GET ", false, http1Protocol},
		{"POST /x", false, http1Protocol},
		{"PUT", false, unknown},
		{"\x16\x03\x01", false, tlsProtocol},
		{"\x02\x00\x00\x00", false, muxrpcProtocol}, // an smux frame
		{"\x00\xffgarb", false, muxrpcProtocol},
		{"MUXRPC\x00\x01", true, muxrpcProtocol},
		{"MU", true, muxrpcProtocol},
	} {
		if got := classify([]byte(tc.in), tc.full); got != tc.want {
			t.Errorf("classify(%q, %v) = %v, want %v", tc.in, tc.full, got, tc.want)
		}
	}
}

// TestClassifyAllocates nothing: telling a connection's protocol costs
// no memory beyond the 8-byte array its bytes are peeked into.
func TestClassifyAllocatesNothing(t *testing.T) {
	in := [][]byte{[]byte("MUXRPC\x00\x01"), []byte("PRI * HT"), []byte("GET / HT"), []byte("\x02\x00\x00\x00")}
	if n := testing.AllocsPerRun(100, func() {
		for _, b := range in {
			classify(b, false)
		}
	}); n != 0 {
		t.Errorf("classify allocates %v times", n)
	}
}
