//go:build unix

package asprocesses

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// An example run as two processes.
type example struct {
	name string
	// args are each half's arguments beyond -listen/-connect ADDR.
	serverArgs, clientArgs []string
	// clientSays is what the client prints before it ends by itself.
	clientSays []string
	// serverSays is what the server prints of the client's calls. For an
	// example whose client runs until it is stopped (stopClient), the
	// client is stopped with SIGTERM once the server has printed it.
	serverSays string
	stopClient bool
}

// TestExamplesAsTwoProcesses builds every example of the root module,
// runs its server with -listen on a free loopback port and its client
// with -connect, checks what the client printed, and stops the server
// with SIGTERM, which must end it gracefully (exit status 0) within 20 s.
func TestExamplesAsTwoProcesses(t *testing.T) {
	certs := t.TempDir()
	examples := []example{
		{name: "helloworld", clientSays: []string{"Greeting: Hello, world"}},
		{name: "routeguide", clientSays: []string{"RouteChat: 6 notes sent, 4 earlier notes received"}},
		{name: "callbacks", clientSays: []string{`client: the server called back: "second"`, "announce: the server delivered 2 notifications to this client"}},
		{name: "tls", serverArgs: []string{"-certs", certs}, clientArgs: []string{"-certs", certs},
			clientSays: []string{`client: connected to "tls-example-server"`, `client: "tls-example-server" called back: "hello from the server"`},
			serverSays: `server: Unary("hello") from "client-1"`},
		{name: "middleware", clientSays: []string{"client: Unary without a token: rpc error: code = Unauthenticated", "client: /metrics: muxrpc_peers 1"}},
		{name: "http", clientSays: []string{"agent -> hub: hub is up (GET /status)"}},
		{name: "agents", clientArgs: []string{"-name", "build-1"}, serverSays: "build-1: status build-1", stopClient: true},
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin)
	for _, e := range examples {
		build.Args = append(build.Args, "./examples/"+e.name)
	}
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, e := range examples {
		t.Run(e.name, func(t *testing.T) { runAsTwoProcesses(t, filepath.Join(bin, e.name), e) })
	}
}

// servingOn matches the line each example's server logs once it listens.
var servingOn = regexp.MustCompile(`serving on (\S+)`)

func runAsTwoProcesses(t *testing.T, path string, e example) {
	server := start(t, path, append([]string{"-listen", "127.0.0.1:0"}, e.serverArgs...)...)
	addr := server.wait(t, servingOn, 30*time.Second)[1]

	client := start(t, path, append([]string{"-connect", addr}, e.clientArgs...)...)
	if e.serverSays != "" {
		server.wait(t, regexp.MustCompile(regexp.QuoteMeta(e.serverSays)), 30*time.Second)
	}
	if e.stopClient {
		client.stop(t)
	} else {
		client.exited(t, 60*time.Second)
	}
	for _, want := range e.clientSays {
		if !strings.Contains(client.output(), want) {
			t.Errorf("the client did not print %q; it printed:\n%s", want, client.output())
		}
	}
	server.stop(t)
}

// A process is a running example, its stdout and stderr kept together.
type process struct {
	cmd    *exec.Cmd
	done   chan error
	mu     sync.Mutex
	out    strings.Builder
	update chan struct{} // closed and replaced whenever out grows
}

// start starts path with args; the test kills it at its end if it is
// still running.
func start(t *testing.T, path string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(path, args...), done: make(chan error, 1), update: make(chan struct{})}
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			close(p.update)
			p.update = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		err := p.cmd.Wait()
		w.Close()
		<-copied
		p.done <- err
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
		}
		<-copied
	})
	return p
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait waits until the process's output matches re, and returns the
// match's submatches.
func (p *process) wait(t *testing.T, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		p.mu.Lock()
		m, update := re.FindStringSubmatch(p.out.String()), p.update
		p.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-update:
		case <-ctx.Done():
			t.Fatalf("%s printed no %q within %v; it printed:\n%s", p.cmd.Path, re, d, p.output())
		}
	}
}

// exited waits for the process to end by itself, successfully.
func (p *process) exited(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s %v: %v; it printed:\n%s", p.cmd.Path, p.cmd.Args[1:], err, p.output())
		}
	case <-time.After(d):
		t.Fatalf("%s %v did not end within %v; it printed:\n%s", p.cmd.Path, p.cmd.Args[1:], d, p.output())
	}
}

// stop sends the process SIGTERM, and checks that it ends gracefully:
// with exit status 0, within 20 s.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exited(t, 20*time.Second)
}
