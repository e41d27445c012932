package rpc

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// Peers that speak the call layer by hand, on real sessions over loopback
// TCP: a raw caller writes its parts on a stream it opens and never resets
// it; a raw callee answers calls with whatever bytes a test chooses.

// rawCallee returns a Peer dialed to a session whose other side serves
// every call stream with answer, on transport tr. The session, and the
// goroutines of answer, end with the test.
func rawCallee(t testing.TB, tr mux.Transport, answer func(st *mux.Stream), opts ...DialOption) *Peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var answering atomic.Int64 // answers running
	sessc := make(chan *mux.Session, 1)
	go func() {
		defer close(sessc)
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		sess, err := mux.Server(conn, &mux.Config{Transport: tr})
		if err != nil {
			conn.Close()
			return
		}
		welcomeHellos(sess)
		sess.HandleType(StreamType, func(st *mux.Stream) {
			answering.Add(1)
			defer answering.Add(-1)
			defer st.Close()
			answer(st)
		})
		sessc <- sess
	}()
	p := dial(t, ln.Addr().String(), append([]DialOption{muxOpt(tr)}, opts...)...)
	sess := <-sessc
	if sess == nil {
		t.Fatal("the raw callee's session did not start")
	}
	t.Cleanup(func() {
		sess.Kill()
		eventually(t, 10*time.Second, "the raw callee's answers to return", func() bool { return answering.Load() == 0 })
	})
	return p
}

// untilCallerGivesUp returns once the caller of st has reset the stream,
// or closed it on smux, which has no resets, or after 10 s.
func untilCallerGivesUp(st *mux.Stream) {
	aborted := make(chan struct{})
	if st.OnAbort(func() { close(aborted) }) != nil {
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, st)
		return
	}
	select {
	case <-aborted:
	case <-time.After(10 * time.Second):
	}
}

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

// callHeaderWith makes a call header whose metadata entries are the pairs
// kv, exactly as given: appendCallHeader would leave reserved keys out.
func callHeaderWith(method string, kv ...string) []byte {
	b, start := beginPart(nil, partCallHeader)
	b = protowire.AppendTag(b, fieldCallMethod, protowire.BytesType)
	b = protowire.AppendString(b, method)
	b = appendEntries(b, fieldCallMetadata, kv...)
	return endPart(b, start)
}

// appendEntries appends the pairs kv as metadata entries of field.
func appendEntries(b []byte, field protowire.Number, kv ...string) []byte {
	for i := 0; i+1 < len(kv); i += 2 {
		b = protowire.AppendTag(b, field, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(kv[i], kv[i+1])))
		b = protowire.AppendTag(b, fieldEntryKey, protowire.BytesType)
		b = protowire.AppendString(b, kv[i])
		b = protowire.AppendTag(b, fieldEntryValue, protowire.BytesType)
		b = protowire.AppendString(b, kv[i+1])
	}
	return b
}

// welcomeHellos has a raw server session admit the client's session
// hello, as any muxrpc server would, without looking at it.
func welcomeHellos(sess *mux.Session) {
	sess.HandleType(HelloStreamType, func(st *mux.Stream) {
		defer st.Close()
		r := partReader{st: st}
		defer r.release()
		if kind, _, err := r.next(); err == nil && kind == partHello {
			st.WriteLast(appendWelcome(nil, status.New(codes.OK, ""), nil))
		}
	})
}

// sendHello sends a raw client session's session hello and waits for the
// server to admit it.
func sendHello(ctx context.Context, sess *mux.Session) error {
	st, err := sess.OpenType(ctx, HelloStreamType)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.WriteLast(appendHello(nil, nil, nil)); err != nil {
		return err
	}
	r := partReader{st: st}
	defer r.release()
	kind, payload, err := r.next()
	if err != nil || kind != partWelcome {
		return fmt.Errorf("no welcome to the session hello: kind %d, %v", kind, err)
	}
	if w, err := parseHello(payload, true); err != nil || w.code != codes.OK {
		return fmt.Errorf("session hello refused: %+v, %v", w, err)
	}
	return nil
}
