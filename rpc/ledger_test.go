package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ledgerEcho is test.Echo that keeps a ledger: every handler, on entry,
// counts one run for the call id its caller put in the call's metadata,
// before it reads a request. So after the calls a test can set what each
// caller got against what each handler did: a call that succeeded ran
// exactly once, a call that failed retry-safe never ran.
//
// A call's metadata also says what its handler does besides answering
// (see ledgerSpec): call its caller back first, with a call of its own
// whose id is the call's id and "/back", and pause. Every answer is the
// request with the side's name in front, so that a caller can check each
// byte it gets.
type ledgerEcho struct {
	name     string     // prefixed to every answer
	peerName string     // the name of the side a call back goes to
	runs     *runLedger // the handler runs of this side, by call id
	// hold, if set, is where every handler waits in the middle of its
	// call (see ledgerCall); an error it returns ends the call.
	hold func(ctx context.Context) error
}

// runLedger counts handler runs by call id.
type runLedger struct {
	m     sync.Map // call id -> *atomic.Int32
	total atomic.Int64
}

func (l *runLedger) ran(id string) {
	v, _ := l.m.LoadOrStore(id, new(atomic.Int32))
	v.(*atomic.Int32).Add(1)
	l.total.Add(1)
}

// runs returns how many times a handler ran for the call id.
func (l *runLedger) runs(id string) int32 {
	v, ok := l.m.Load(id)
	if !ok {
		return 0
	}
	return v.(*atomic.Int32).Load()
}

// ledgerSpec is one call for ledgerCall to make, and what its handler
// does, as the call's metadata tells it.
type ledgerSpec struct {
	kind  string        // one of callKinds
	id    string        // unique among the calls a ledger counts
	back  string        // the kind of call the handler makes back first; "" for none
	n     int           // streaming calls: messages in each streaming direction (at least 1)
	size  int           // bytes of filler in each request
	delay time.Duration // how long the handler pauses (its context ends the pause)
}

// Metadata keys that carry a ledgerSpec to the handler.
const (
	ledgerIDKey    = "ledger-id"
	ledgerBackKey  = "ledger-back"
	ledgerNKey     = "ledger-n"
	ledgerDelayKey = "ledger-delay-us"
)

// errWrongAnswer marks a call that ended OK but did not get, byte for
// byte and message for message, the answers it should have.
var errWrongAnswer = errors.New("wrong answer")

// wrongAnswer is the error of a call that got the wrong answer.
func wrongAnswer(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errWrongAnswer, fmt.Sprintf(format, args...))
}

// ledgerRequest is the i-th request of a call: its id, its index and
// filler that depends on both, so that crossed or corrupted messages show.
func ledgerRequest(s ledgerSpec, i int) string {
	head := s.id + "#" + strconv.Itoa(i) + ":"
	var b strings.Builder
	b.Grow(len(head) + s.size)
	b.WriteString(head)
	for j := range s.size {
		b.WriteByte(byte('a' + (j+i+len(s.id))%26))
	}
	return b.String()
}

// ledgerCall makes the call s through cc, to a ledgerEcho named name,
// and checks every answer. It returns nil for a call that ended OK with
// all the right answers, an error wrapping errWrongAnswer for one that
// ended OK otherwise, and the call's error for a call that failed.
//
// The handlers answer so, pausing (hold, then s.delay) where shown:
//   - unary: the request; pause; the answer.
//   - serverStream: the request; answer #0; pause; answers #1 to #n-1
//     (with n = 1: pause; answer #0).
//   - clientStream: requests #0 to #n-1; pause; one answer joining them.
//   - bidi: request #0, answer #0; pause; then each request answered.
func ledgerCall(ctx context.Context, cc ClientConnInterface, s ledgerSpec, name string) error {
	n := max(s.n, 1)
	md := metadata.Pairs(ledgerIDKey, s.id, ledgerNKey, strconv.Itoa(n))
	if s.back != "" {
		md.Set(ledgerBackKey, s.back)
	}
	if s.delay > 0 {
		md.Set(ledgerDelayKey, strconv.FormatInt(s.delay.Microseconds(), 10))
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	c := echoClient{cc}
	want := func(i int) string { return name + ":" + ledgerRequest(s, i) }
	switch s.kind {
	case "unary":
		out, err := c.Unary(ctx, wrapperspb.String(ledgerRequest(s, 0)))
		if err != nil {
			return err
		}
		if out.Value != want(0) {
			return wrongAnswer("unary %s: got %.40q", s.id, out.Value)
		}
		return nil
	case "serverStream":
		st, err := c.ServerStream(ctx, wrapperspb.String(ledgerRequest(s, 0)))
		if err != nil {
			return err
		}
		for i := range n {
			out, err := st.Recv()
			if err == io.EOF {
				return wrongAnswer("serverStream %s: ended OK after %d of %d answers", s.id, i, n)
			}
			if err != nil {
				return err
			}
			if w := want(0) + "#" + strconv.Itoa(i); out.Value != w {
				return wrongAnswer("serverStream %s: answer %d: got %.40q", s.id, i, out.Value)
			}
		}
		return wantEnd(st, "serverStream "+s.id)
	case "clientStream":
		st, err := c.ClientStream(ctx)
		if err != nil {
			return err
		}
		all := make([]string, n)
		for i := range n {
			all[i] = ledgerRequest(s, i)
			if err := st.Send(wrapperspb.String(all[i])); err != nil {
				return afterSendFailed(st, err, "clientStream "+s.id)
			}
		}
		out, err := st.CloseAndRecv()
		if err != nil {
			return err
		}
		if w := name + ":" + strings.Join(all, ","); out.Value != w {
			return wrongAnswer("clientStream %s: got %.40q", s.id, out.Value)
		}
		return nil
	case "bidi":
		st, err := c.Bidi(ctx)
		if err != nil {
			return err
		}
		for i := range n {
			if err := st.Send(wrapperspb.String(ledgerRequest(s, i))); err != nil {
				return afterSendFailed(st, err, "bidi "+s.id)
			}
			out, err := st.Recv()
			if err == io.EOF {
				return wrongAnswer("bidi %s: ended OK after %d of %d answers", s.id, i, n)
			}
			if err != nil {
				return err
			}
			if out.Value != want(i) {
				return wrongAnswer("bidi %s: answer %d: got %.40q", s.id, i, out.Value)
			}
		}
		st.CloseSend()
		return wantEnd(st, "bidi "+s.id)
	}
	return fmt.Errorf("unknown call kind %q", s.kind)
}

// wantEnd reads the end of a call whose answers have all come: io.EOF
// is its status OK.
func wantEnd(st ClientStream, what string) error {
	err := st.RecvMsg(new(wrapperspb.StringValue))
	switch {
	case err == nil:
		return wrongAnswer("%s: an answer too many", what)
	case err == io.EOF:
		return nil
	}
	return err
}

// afterSendFailed returns the status of a call whose Send failed: io.EOF
// says the callee has ended the call, and RecvMsg tells how.
func afterSendFailed(st ClientStream, err error, what string) error {
	if err != io.EOF {
		return err
	}
	err = st.RecvMsg(new(wrapperspb.StringValue))
	if err == nil || err == io.EOF {
		return wrongAnswer("%s: the callee ended the call OK before all requests", what)
	}
	return err
}

// begin counts the handler's run for the call id in ctx's metadata,
// reads the rest of the ledgerSpec there (size apart), and makes the call
// back the spec asks for.
func (e *ledgerEcho) begin(ctx context.Context) (ledgerSpec, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if v := md.Get(k); len(v) == 1 {
			return v[0]
		}
		return ""
	}
	s := ledgerSpec{id: get(ledgerIDKey), back: get(ledgerBackKey)}
	if s.id == "" {
		return s, status.Error(codes.InvalidArgument, "no call id")
	}
	e.runs.ran(s.id)
	s.n, _ = strconv.Atoi(get(ledgerNKey))
	s.n = max(s.n, 1)
	if us, err := strconv.ParseInt(get(ledgerDelayKey), 10, 64); err == nil {
		s.delay = time.Duration(us) * time.Microsecond
	}
	if s.back == "" {
		return s, nil
	}
	// The call back, with the same shape, to the caller's ledgerEcho.
	back := ledgerSpec{kind: s.back, id: s.id + "/back", n: s.n, size: 8}
	err := ledgerCall(ctx, PeerFromContext(ctx), back, e.peerName)
	if errors.Is(err, errWrongAnswer) {
		return s, status.Error(codes.DataLoss, err.Error())
	}
	return s, err
}

// pause is where a handler waits in the middle of its call: hold, then
// the call's delay, each ended by the call's context.
func (e *ledgerEcho) pause(ctx context.Context, s ledgerSpec) error {
	if e.hold != nil {
		if err := e.hold(ctx); err != nil {
			return err
		}
	}
	if s.delay <= 0 {
		return nil
	}
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *ledgerEcho) Unary(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	s, err := e.begin(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.pause(ctx, s); err != nil {
		return nil, err
	}
	return wrapperspb.String(e.name + ":" + in.Value), nil
}

func (e *ledgerEcho) ServerStream(in *wrapperspb.StringValue, st ServerStreamingServer[wrapperspb.StringValue]) error {
	s, err := e.begin(st.Context())
	if err != nil {
		return err
	}
	for i := range s.n {
		if i == 1 || s.n == 1 {
			if err := e.pause(st.Context(), s); err != nil {
				return err
			}
		}
		if err := st.Send(wrapperspb.String(e.name + ":" + in.Value + "#" + strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return nil
}

func (e *ledgerEcho) ClientStream(st ClientStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	s, err := e.begin(st.Context())
	if err != nil {
		return err
	}
	var all []string
	for {
		in, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		all = append(all, in.Value)
	}
	if err := e.pause(st.Context(), s); err != nil {
		return err
	}
	return st.SendAndClose(wrapperspb.String(e.name + ":" + strings.Join(all, ",")))
}

func (e *ledgerEcho) Bidi(st BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	s, err := e.begin(st.Context())
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		if i == 1 {
			if err := e.pause(st.Context(), s); err != nil {
				return err
			}
		}
		in, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.Send(wrapperspb.String(e.name + ":" + in.Value)); err != nil {
			return err
		}
	}
}
