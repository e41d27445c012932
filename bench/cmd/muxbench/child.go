package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// runServerChild is the server child: it serves framework fw on loopback
// TCP and answers the client child's requests, until its stdin closes.
func runServerChild(fw *framework) error {
	ctl := newLineConn(os.Stdin, os.Stdout)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ctl.send(serverReady{Err: err.Error()})
		return err
	}
	srv, err := fw.serve(lis, &benchServer{})
	if err != nil {
		ctl.send(serverReady{Err: err.Error()})
		return err
	}
	defer srv.stop()
	if err := ctl.send(serverReady{Addr: lis.Addr().String()}); err != nil {
		return err
	}
	fl := &fleet{fw: fw}
	defer fl.stop()
	var w *window
	for {
		var req serverRequest
		if err := ctl.recv(&req); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		var rep serverReply
		switch req.Op {
		case "begin":
			w = beginWindow()
		case "end":
			if w == nil {
				rep.Err = "end without begin"
				break
			}
			c := w.end()
			rep.Cost, w = &c, nil
		case "callback":
			rep = callBack(srv, req)
		case "fleet", "kill", "restart", "served":
			rep = fl.handle(req)
		default:
			rep.Err = fmt.Sprintf("unknown op %q", req.Op)
		}
		if err := ctl.send(rep); err != nil {
			return err
		}
	}
}

// callBack runs the server's side of W7: callers calling the client's
// Callback service for req.Duration.
func callBack(srv server, req serverRequest) serverReply {
	ctx, cancel := context.WithTimeout(context.Background(), req.Duration+time.Minute)
	defer cancel()
	peer, err := srv.callbackPeer(ctx)
	if err != nil {
		return serverReply{Err: err.Error()}
	}
	before := checked.Load()
	callers := make([]unaryCaller, req.Callers)
	for i := range callers {
		callers[i] = peer
	}
	calls, elapsed, err := unaryLoad(ctx, callers, req.Size, req.Duration, nil)
	if err != nil {
		return serverReply{Err: err.Error()}
	}
	return serverReply{Calls: calls, Elapsed: elapsed, Checked: checked.Load() - before}
}

// runClientChild is the client child: it connects to the server child at
// addr and runs workload wl on framework fw, then writes the result.
func runClientChild(fw *framework, wl *workload, addr string, p params) error {
	ctl := newLineConn(os.Stdin, os.Stdout)
	e := &clientEnv{fw: fw, addr: addr, p: p, server: serverControl{ctl}}
	ctx, cancel := context.WithTimeout(context.Background(), measurementTimeout)
	defer cancel()
	s, err := wl.run(ctx, e)
	if err != nil {
		ctl.send(clientLine{Err: err.Error()})
		return err
	}
	s.Checked += checked.Load()
	return ctl.send(clientLine{Result: &s})
}

// measurementTimeout bounds one measurement, both children.
const measurementTimeout = 3 * time.Minute
