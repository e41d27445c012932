package rpc

import (
	"context"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
)

// A peer that speaks the call layer by hand, on a real session over
// loopback TCP: a raw caller writes its parts on a stream it opens and
// never resets it.
// openCall opens a call stream on p's session and writes wire on it, as
// a caller would that never resets its streams; with last it then ends
// the caller's direction where the transport can. The test closes the
// stream when it ends. Reads fail after 10 s, so that no test hangs.
func openCall(t testing.TB, ctx context.Context, p *Peer, wire []byte, last bool) *mux.Stream {
	t.Helper()
	st, err := p.Session().OpenType(ctx, StreamType)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if last {
		_, err = st.WriteLast(wire)
	} else {
		_, err = st.Write(wire)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// answer is what a callee sent on a call, as a caller reads it.
type answer struct {
	messages int
	status   error // the trailer's status: nil for OK
}

// readAnswer reads the callee's parts on st up to its trailer. err is
// why it could not read them all.
func readAnswer(st *mux.Stream) (a answer, err error) {
	r := partReader{st: st, maxMsg: 64 << 20}
	defer r.release()
	for {
		kind, payload, err := r.next()
		if err != nil {
			return a, err
		}
		switch kind {
		case partMessage:
			a.messages++
		case partTrailer:
			t, err := parseTrailer(payload)
			if err != nil {
				return a, err
			}
			a.status = t.err()
			return a, nil
		}
	}
}
