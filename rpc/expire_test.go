package rpc

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestDeadlineRacingAFailedReceiveStillSendsATrailer makes bidi calls
// whose deadline passes at once while the handler's second receive
// meets a part over the limit: the deadline's expiry and the failed
// receive race to end the call. Whichever wins, the caller reads a
// trailer, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED, or a reset with code
// 0x104: never a stream that ends without one, which the failed receive
// made when it closed the stream while the expiry was about to write
// its trailer. (Found by FuzzCallee; the race is narrow, hence many
// calls.)
func TestDeadlineRacingAFailedReceiveStillSendsATrailer(t *testing.T) {
	const calls, parallel = 400, 4
	ctx := testCtx(t, 60*time.Second)
	srv := NewServer(muxOpt(mux.Native))
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	p := dial(t, serve(t, srv), muxOpt(mux.Native))
	req, _ := appendMessage(nil, wrapperspb.String("late"), 1<<20)
	wire := rawParts(appendCallHeader(nil, "/test.Echo/Bidi", time.Microsecond, 0, nil, ""), req, []byte{partClientEnd, 0x7f, 0xff, 0xff, 0xff})
	err := concurrently(parallel, func(int) error {
		for range calls / parallel {
			st, err := p.Session().OpenType(ctx, StreamType)
			if err != nil {
				return err
			}
			st.SetDeadline(time.Now().Add(10 * time.Second))
			st.WriteLast(wire)
			code, _, err := readCalleeAnswer(st)
			st.Close()
			var reset *mux.ResetError
			switch {
			case err != nil && errors.As(err, &reset) && reset.Code == resetDeadlineExceeded:
			case err != nil:
				return fmt.Errorf("reading the answer: %w", err)
			case code != codes.DeadlineExceeded && code != codes.ResourceExhausted:
				return fmt.Errorf("answered %v, want DeadlineExceeded or ResourceExhausted", code)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, ctx, p, "server")
}
