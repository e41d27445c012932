package rpc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/muxrpc/muxrpc/mux"
)

// What an idle session costs the server: an agent's session, admitted
// under its own identity and listed in the Directory, that made one call,
// took one from the server, and then nothing, as an agent that keeps its
// connection for calls that come rarely. The clients run in a child process (this test binary again), so
// that what the parent's runtime reports is the server's alone.

// idleCostEnv, set in the child, holds the server's address, the number of
// sessions to open and the transport.
const idleCostEnv = "MUXRPC_IDLECOST_CHILD"

// The bound on what an idle session of the native transport over TCP may
// cost the server: heap and goroutine stacks together, and goroutines.
const (
	idleSessionBytes      = 16 << 10
	idleSessionGoroutines = 2
)

// idleFigures measures the process once its garbage is collected and its
// stacks have shrunk (each GC halves a stack a goroutine uses less than a
// quarter of).
func idleFigures() processCost {
	for range 4 {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return processCost{heap: int64(ms.HeapInuse), stacks: int64(ms.StackInuse), goroutines: runtime.NumGoroutine()}
}

// processCost is what the runtime reports of the process's memory in use
// and its goroutines.
type processCost struct {
	heap, stacks int64
	goroutines   int
}

// per returns what each of n sessions costs, c being the cost with them
// and base without, in words: the memory, heap and stacks, then the
// goroutines.
func (c processCost) per(base processCost, n int) (mem, goroutines float64, report string) {
	heap := float64(c.heap-base.heap) / float64(n)
	stacks := float64(c.stacks-base.stacks) / float64(n)
	goroutines = float64(c.goroutines-base.goroutines) / float64(n)
	report = fmt.Sprintf("%d idle sessions cost %.1f KiB each (heap %.1f KiB, stacks %.1f KiB) and %.3f goroutines (%d in all)",
		n, (heap+stacks)/1024, heap/1024, stacks/1024, goroutines, c.goroutines-base.goroutines)
	return heap + stacks, goroutines, report
}

// TestIdleSessionCost opens sessions from a child process, one call on
// each, and measures what the server holds per session once they are
// idle. The bound holds for the native transport; smux's cost is logged.
// The race detector roughly doubles what memory costs, and differs in
// what it keeps, so under it only the goroutines are asserted.
func TestIdleSessionCost(t *testing.T) {
	if env := os.Getenv(idleCostEnv); env != "" {
		idleCostChild(t, env)
		return
	}
	sessions := 1000
	if raceEnabled || testing.Short() {
		sessions = 500
	}
	forEachTransport(t, func(t *testing.T, tr mux.Transport) {
		auth := &tokenAuth{}
		srv := NewServer(muxOpt(tr), WithAuthenticator(auth.authenticate))
		srv.RegisterService(&echoDesc, defaultEcho)
		addr := serve(t, srv)
		base := idleFigures()

		// No goroutine of the test's may run while it counts the
		// server's: the child's output is read here, and a timer, not
		// exec.CommandContext, bounds its life.
		cmd := exec.Command(os.Args[0], "-test.run=^TestIdleSessionCost$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", idleCostEnv, addr, sessions, tr))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		kill := time.AfterFunc(50*time.Second, func() { cmd.Process.Kill() })
		defer kill.Stop()
		out := bufio.NewReader(stdout)
		defer func() {
			stdin.Close() // the child closes its sessions and exits
			io.Copy(io.Discard, out)
			if err := cmd.Wait(); err != nil {
				t.Errorf("the child: %v", err)
			}
		}()
		client, err := readChildFigures(out)
		if err != nil {
			t.Fatalf("the child: %v", err)
		}
		eventually(t, 10*time.Second, "every agent listed", func() bool { return srv.Directory().Len() == sessions })
		// The server calls each agent once, by name, as a hub would.
		ctx := testCtx(t, 30*time.Second)
		for i := range sessions {
			checkEcho(t, ctx, srv.Directory().Conn(fmt.Sprint("agent-", i)), "agent")
		}
		// A handler's goroutine may still be on its way out after its
		// answer left, and the goroutines mux keeps for a moment after a
		// call (its spare readers) leave a moment later: wait until the
		// count holds still for a while.
		var idle processCost
		eventually(t, 20*time.Second, "the goroutines to settle", func() bool {
			before := idleFigures()
			time.Sleep(300 * time.Millisecond)
			idle = idleFigures()
			return idle.goroutines == before.goroutines
		})
		perMem, perG, report := idle.per(base, sessions)
		t.Logf("%v server: %s", tr, report)
		t.Logf("%v client: %s", tr, client)
		if tr != mux.Native {
			return
		}
		if perG > idleSessionGoroutines {
			t.Errorf("an idle session costs the server %.2f goroutines, want at most %d", perG, idleSessionGoroutines)
		}
		if !raceEnabled && perMem > idleSessionBytes {
			t.Errorf("an idle session costs the server %.0f bytes, want at most %d", perMem, idleSessionBytes)
		}
	})
}

// readChildFigures reads the child's report of its own cost per session,
// the line that says its sessions are idle.
func readChildFigures(r *bufio.Reader) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if fig, ok := strings.CutPrefix(line, "idle: "); ok {
			return strings.TrimSpace(fig), nil
		}
		if err != nil {
			return "", fmt.Errorf("no report before %w", err)
		}
	}
}

// idleCostChild is the child's side: it opens the sessions, makes one call
// on each, reports what they cost it, and keeps them idle until its
// standard input closes.
func idleCostChild(t *testing.T, env string) {
	parts := strings.Split(env, ",")
	addr := parts[0]
	sessions, _ := strconv.Atoi(parts[1])
	tr, _ := strconv.Atoi(parts[2])
	ctx := testCtx(t, 50*time.Second)
	base := idleFigures()
	peers := make([]*Peer, 0, sessions)
	defer func() {
		for _, p := range peers {
			p.Close()
		}
	}()
	callbacks := agentServices("agent")
	for i := range sessions {
		p, err := Dial(ctx, addr, muxOpt(mux.Transport(tr)), agentCredentials(fmt.Sprint("agent-", i), ""), WithServices(callbacks))
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
		checkEcho(t, ctx, p, "server")
	}
	time.Sleep(100 * time.Millisecond) // the last answers' goroutines settle
	_, _, report := idleFigures().per(base, sessions)
	fmt.Printf("idle: %s\n", report)
	io.Copy(io.Discard, os.Stdin)
}
