package mux

import (
	"io"
	"testing"
	"time"
)

// TestHandlerClosingItsSessionReturns has a HandleType handler close its
// own session: Close returns, after at most its CloseTimeout, rather than
// wait for the handler that calls it.
func TestHandlerClosingItsSessionReturns(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			const closeTimeout = 200 * time.Millisecond
			c, s := pair(t, withTransport(nil, tr), withTransport(&Config{CloseTimeout: closeTimeout}, tr))
			closed := make(chan error, 1)
			s.HandleType(TypeDefault, func(st *Stream) {
				io.ReadFull(st, make([]byte, 1))
				closed <- s.Close()
			})
			st, err := c.Open(testCtx(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-closed:
				if err != nil {
					t.Fatalf("Close: %v", err)
				}
			case <-time.After(closeTimeout + 10*time.Second):
				t.Fatal("Session.Close called by a handler did not return")
			}
			if s.Err() == nil {
				t.Fatal("the session still runs after Close")
			}
		})
	}
}
