package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const want = `client: connected to "tls-example-server", certificate issued by "muxrpc tls example CA", over TLS 1.3
server: Unary("hello") from "client-1", certificate issued by "muxrpc tls example CA", over TLS 1.3
client: unary: hello
server: Announce from "client-1", calling it back
client: "tls-example-server" called back: "hello from the server"
client: announce: the server delivered 1 notification
`

// TestDemo runs the demo as `go run ./examples/tls` does and checks every
// line it prints.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := runBoth(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != want {
		t.Errorf("the demo printed:\n%s\nwant:\n%s", got, want)
	}
}

// startServer serves as -listen does, with the certificates of dir, until
// the test ends, and returns the server's address and what it prints.
func startServer(t *testing.T, ctx context.Context, dir string) (string, *bytes.Buffer) {
	t.Helper()
	cfg, err := serverTLSIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	srvCtx, interrupt := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(srvCtx, lis, &out) }()
	t.Cleanup(func() {
		interrupt() // as SIGINT does
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String(), &out
}

// TestCertsDir runs the server as -listen does and the client as -connect
// does, twice, sharing the certificates through a directory: the first
// server writes them there, the clients read them, and the second server
// keeps them.
func TestCertsDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "certs")
	var wantServer, wantClient string
	for _, line := range strings.SplitAfter(want, "\n") {
		if strings.HasPrefix(line, "server: ") {
			wantServer += line
		} else {
			wantClient += line
		}
	}

	var firstCA []byte
	for run := range 2 {
		addr, srvOut := startServer(t, ctx, dir)
		for _, name := range certFiles {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if mode := fi.Mode().Perm(); mode != 0o600 {
				t.Errorf("%s: mode %v, want 0600", name, mode)
			}
		}
		ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if run == 1 && !bytes.Equal(ca, firstCA) {
			t.Error("the second server made new certificates")
		}
		firstCA = ca

		files, err := readCerts(dir, "client")
		if err != nil {
			t.Fatal(err)
		}
		var cliOut bytes.Buffer
		if err := runClient(ctx, &cliOut, addr, files); err != nil {
			t.Fatal(err)
		}
		if got := cliOut.String(); got != wantClient {
			t.Errorf("run %d: the client printed:\n%s\nwant:\n%s", run+1, got, wantClient)
		}
		if got := srvOut.String(); got != wantServer {
			t.Errorf("run %d: the server printed:\n%s\nwant:\n%s", run+1, got, wantServer)
		}
	}
}

// TestClientWithoutCertificate checks that the server refuses a client
// that trusts its CA but presents no certificate of its own, or one of
// another CA.
func TestClientWithoutCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	addr, srvOut := startServer(t, ctx, dir)
	files, err := readCerts(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	other, err := newCerts() // a client certificate of another CA
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		certs func(cfg *tls.Config)
	}{
		{"no certificate", func(cfg *tls.Config) { cfg.Certificates = nil }},
		{"another CA's", func(cfg *tls.Config) {
			_, cert, err := keyPair(other, "client")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}},
	} {
		cfg, err := clientTLS(files)
		if err != nil {
			t.Fatal(err)
		}
		tc.certs(cfg)
		err = func() error {
			p, err := rpc.Dial(ctx, addr, rpc.WithTLS(cfg))
			if err != nil {
				return err
			}
			defer p.Close()
			_, err = echov1.NewEchoClient(p).Unary(ctx, &echov1.EchoRequest{Message: "let me in"})
			return err
		}()
		if err == nil {
			t.Errorf("%s: the server served the call", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if srvOut.Len() != 0 {
		t.Errorf("the server printed:\n%s", srvOut)
	}
}
