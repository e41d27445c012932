package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// The children speak JSON lines on their stdin and stdout. The server
// child first writes a serverReady; then it answers each serverRequest on
// its stdin with a serverReply, until its stdin closes. The client child
// writes clientLines: requests for the server, which the parent relays
// and whose replies it writes to the client's stdin, and then one result.

// serverReady is the server child's first line.
type serverReady struct {
	Addr string `json:"addr"`
	Err  string `json:"err,omitempty"`
}

// A serverRequest is what the client child asks of the server child.
type serverRequest struct {
	// Op is "begin" (start measuring), "end" (stop, and reply with the
	// cost), or "callback" (call the client's Callback service with
	// Callers callers of Size-byte requests for Duration, and reply with
	// the calls made); or, for W9 and W10, one of the fleet's: "fleet"
	// (start Count servers), "kill", "restart" or "served" (of server
	// Index; see fleet.handle).
	Op       string        `json:"op"`
	Count    int           `json:"count,omitempty"`
	Index    int           `json:"index,omitempty"`
	Callers  int           `json:"callers,omitempty"`
	Size     int           `json:"size,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
}

// A serverReply answers a serverRequest.
type serverReply struct {
	Cost    *cost         `json:"cost,omitempty"`
	Calls   int64         `json:"calls,omitempty"`
	Elapsed time.Duration `json:"elapsed,omitempty"`
	Checked int64         `json:"checked,omitempty"` // answer bytes the server checked
	Addrs   []string      `json:"addrs,omitempty"`   // of a fleet's servers
	At      int64         `json:"at,omitempty"`      // when a kill's Stop returned, Unix ns
	Err     string        `json:"err,omitempty"`
}

// A clientLine is one line of the client child: a request for the server
// child, or the measurement's result, or why it failed.
type clientLine struct {
	Server *serverRequest `json:"server,omitempty"`
	Result *sample        `json:"result,omitempty"`
	Err    string         `json:"err,omitempty"`
}

// A lineConn exchanges JSON lines over a reader and a writer.
type lineConn struct {
	in  *bufio.Scanner
	out io.Writer
}

func newLineConn(r io.Reader, w io.Writer) *lineConn {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 16<<20)
	return &lineConn{in: s, out: w}
}

func (c *lineConn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = c.out.Write(append(b, '\n'))
	return err
}

// recv reads the next line into v; io.EOF when the other side closed.
func (c *lineConn) recv(v any) error {
	if !c.in.Scan() {
		if err := c.in.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	if err := json.Unmarshal(c.in.Bytes(), v); err != nil {
		return fmt.Errorf("control line %q: %w", c.in.Bytes(), err)
	}
	return nil
}

// serverControl is the client child's way to the server child.
type serverControl struct{ c *lineConn }

// ask sends r to the server child and returns its reply.
func (s serverControl) ask(r serverRequest) (serverReply, error) {
	var rep serverReply
	if err := s.c.send(clientLine{Server: &r}); err != nil {
		return rep, err
	}
	if err := s.c.recv(&rep); err != nil {
		return rep, fmt.Errorf("server's reply to %s: %w", r.Op, err)
	}
	if rep.Err != "" {
		return rep, errors.New("server: " + rep.Err)
	}
	return rep, nil
}
