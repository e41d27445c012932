package mux_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/muxrpc/muxrpc/mux"
)

// A server greets whoever opens a stream; a client opens one, sends its
// name, ends its direction and reads the greeting.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ln, err := mux.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		sess, err := ln.Accept()
		if err != nil {
			return
		}
		defer sess.Close()
		for {
			st, err := sess.AcceptType(ctx, mux.TypeDefault)
			if err != nil {
				return // the session ended
			}
			name, err := io.ReadAll(st) // up to the client's CloseWrite
			if err == nil {
				st.WriteLast([]byte("hello, " + string(name)))
			}
			st.Close()
		}
	}()

	sess, err := mux.Dial(ctx, "tcp", ln.Addr().String(), nil)
	if err != nil {
		log.Fatal(err)
	}
	st, err := sess.Open(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := st.Write([]byte("gopher")); err != nil {
		log.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		log.Fatal(err)
	}
	reply, err := io.ReadAll(st)
	if err != nil {
		log.Fatal(err)
	}
	st.Close()
	fmt.Println(string(reply))

	sess.Close() // GoAway; the server's AcceptType then fails
	<-served
	ln.Close()
	// Output: hello, gopher
}

// A stream of high priority sends ahead of streams of normal priority
// whenever both have data waiting, here a control message beside a bulk
// transfer on the same session.
func ExampleStream_SetPriority() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ln, err := mux.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		sess, err := ln.Accept()
		if err != nil {
			return
		}
		defer sess.Close()
		for {
			st, err := sess.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				io.Copy(io.Discard, st)
			}()
		}
	}()

	sess, err := mux.Dial(ctx, "tcp", ln.Addr().String(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	bulk, err := sess.Open(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer bulk.Close()
	control, err := sess.Open(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer control.Close()
	control.SetPriority(mux.PriorityHigh)

	done := make(chan error, 1)
	go func() {
		_, err := bulk.Write(make([]byte, 8<<20))
		bulk.CloseWrite()
		done <- err
	}()
	if _, err := control.WriteLast([]byte("pause")); err != nil {
		log.Fatal(err)
	}
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	fmt.Println("bulk:", bulk.Priority() == mux.PriorityNormal, "control:", control.Priority() == mux.PriorityHigh)
	// Output: bulk: true control: true
}
