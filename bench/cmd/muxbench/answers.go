package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/muxrpc/muxrpc/bench/proto/benchpb"
)

// maxPatternSize is the largest message data the workloads use.
const maxPatternSize = 1 << 20

// pattern is the data of every server-stream message, a prefix of it per
// size, and the body of every request: bytes that do not repeat with a
// short period, so a shifted or mixed-up buffer does not compare equal.
var pattern = func() []byte {
	b := make([]byte, maxPatternSize)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}()

// textWords are the user names of textPattern's records.
var textWords = [...]string{
	"muxrpc", "frames", "calls", "over", "one", "connection", "and", "the",
	"server", "answers", "each", "message", "with", "its", "own", "stream",
	"window", "flow", "control", "header", "payload", "bytes", "gzip", "compressor",
	"client", "callee", "caller", "deadline", "status", "codes", "metadata", "trailer",
}

// textPattern is the body of W3-gzip's requests: JSON lines, records
// {"id":N,"user":"W","score":S,"ok":true} with N counting up and W and S
// drawn by the same xorshift as pattern; data that compresses as such data
// does (gzip at its default level makes 1 MiB of it 146,749 bytes, 7.1 times
// smaller) and does not repeat with a short period.
var textPattern = func() []byte {
	b := make([]byte, 0, maxPatternSize+64)
	x := uint32(2463534242)
	next := func() uint32 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return x
	}
	for id := 0; len(b) < maxPatternSize; id++ {
		b = append(b, `{"id":`...)
		b = strconv.AppendInt(b, int64(id), 10)
		b = append(b, `,"user":"`...)
		b = append(b, textWords[next()%uint32(len(textWords))]...)
		b = append(b, `","score":`...)
		b = strconv.AppendInt(b, int64(next()%100000), 10)
		b = append(b, `,"ok":true}`+"\n"...)
	}
	return b[:maxPatternSize:maxPatternSize]
}()

// patternOf returns the pattern's first size bytes, shared: not to be
// written.
func patternOf(size int64) ([]byte, error) {
	if size < 0 || size > maxPatternSize {
		return nil, fmt.Errorf("message size %d out of range [0, %d]", size, maxPatternSize)
	}
	return pattern[:size:size], nil
}

// A request is a caller's own message for echo calls: the pattern, with
// the caller's number and the call's sequence number stamped over its
// first 16 bytes, so that an answer meant for another caller or call does
// not match.
type request struct {
	msg *benchpb.Payload
}

// newRequest returns caller's request of size bytes (at least 16).
func newRequest(caller int, size int) *request { return newRequestOf(pattern, caller, size) }

// newRequestOf returns caller's request of size bytes (at least 16), of
// body's first bytes but for the stamp.
func newRequestOf(body []byte, caller int, size int) *request {
	data := make([]byte, max(size, 16))
	copy(data, body)
	binary.BigEndian.PutUint64(data, uint64(caller))
	return &request{msg: &benchpb.Payload{Data: data}}
}

// next stamps the request with call number seq and returns it. The
// previous call must have finished with the message.
func (r *request) next(seq uint64) *benchpb.Payload {
	binary.BigEndian.PutUint64(r.msg.Data[8:], seq)
	return r.msg
}

// checked counts the answer bytes compared with what was expected, for
// the report to show that checking ran.
var checked atomic.Int64

// checkEcho fails unless answer is the request sent.
func checkEcho(sent, answer *benchpb.Payload) error {
	if answer == nil || !bytes.Equal(answer.Data, sent.Data) {
		return fmt.Errorf("answer mismatch: sent %d bytes, got %s", len(sent.Data), describe(answer))
	}
	checked.Add(int64(len(answer.Data)))
	return nil
}

// checkStreamed fails unless m is message k of a server stream of size
// bytes each.
func checkStreamed(m *benchpb.Payload, k int64, size int) error {
	if m.Count != k || len(m.Data) != size || !bytes.Equal(m.Data, pattern[:size]) {
		return fmt.Errorf("stream message %d mismatch: got message %d, %d bytes (want %d), data equal: %v",
			k, m.Count, len(m.Data), size, len(m.Data) <= maxPatternSize && bytes.Equal(m.Data, pattern[:len(m.Data)]))
	}
	checked.Add(int64(size))
	return nil
}

func describe(m *benchpb.Payload) string {
	if m == nil {
		return "no message"
	}
	return fmt.Sprintf("%d bytes", len(m.Data))
}
