package mux

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func TestSmokeEcho(t *testing.T) {
	for _, tr := range []Transport{Native} {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			ctx := testCtx(t, 10*time.Second)
			go func() {
				for {
					st, err := s.Accept(ctx)
					if err != nil {
						return
					}
					go func() {
						defer st.Close()
						io.Copy(st, st)
					}()
				}
			}()
			for i := 0; i < 100; i++ {
				st, err := c.Open(ctx)
				if err != nil {
					t.Fatal(err)
				}
				msg := bytes.Repeat([]byte{byte(i)}, 64+i*1000)
				if _, err := st.Write(msg); err != nil {
					t.Fatal(err)
				}
				if err := st.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(st)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("echo %d: got %d bytes, want %d", i, len(got), len(msg))
				}
				st.Close()
			}
		})
	}
}
