package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests run the command, through run, against a muxrpc server on a
// loopback port that serves Echo and gRPC's reflection service.

// testEcho is the Echo the tests call. Unary answers "fail" with a
// status, "block" once the call is cancelled, and "metadata:KEY" with the
// values of the call's metadata KEY joined by commas; any other message it
// echoes, with sequence 7 and a header and a trailer. Bidi is left
// unimplemented.
type testEcho struct {
	echov1.UnimplementedEchoServer
}

func (testEcho) Unary(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	switch msg := req.Message; {
	case msg == "fail":
		return nil, status.Error(codes.FailedPrecondition, "told to fail")
	case msg == "block":
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(20 * time.Second):
			return nil, status.Error(codes.Internal, "the call was never cancelled")
		}
	case strings.HasPrefix(msg, "metadata:"):
		md, _ := metadata.FromIncomingContext(ctx)
		return &echov1.EchoResponse{Message: strings.Join(md.Get(strings.TrimPrefix(msg, "metadata:")), ",")}, nil
	}
	if err := rpc.SetHeader(ctx, metadata.Pairs("x-unary-header", "set by Unary")); err != nil {
		return nil, err
	}
	if err := rpc.SetTrailer(ctx, metadata.Pairs("x-unary-trailer", "set by Unary")); err != nil {
		return nil, err
	}
	return &echov1.EchoResponse{Message: req.Message, Sequence: 7}, nil
}

func (testEcho) ServerStream(req *echov1.ServerStreamRequest, stream echov1.Echo_ServerStreamServer) error {
	if err := stream.SetHeader(metadata.Pairs("x-stream-header", "set by ServerStream")); err != nil {
		return err
	}
	stream.SetTrailer(metadata.Pairs("x-stream-trailer", "set by ServerStream"))
	for i := range req.Count {
		if err := stream.Send(&echov1.EchoResponse{Message: req.Message, Sequence: int64(i)}); err != nil {
			return err
		}
	}
	return nil
}

func (testEcho) ClientStream(stream echov1.Echo_ClientStreamServer) error {
	var words []string
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&echov1.EchoResponse{Message: strings.Join(words, ",")})
		}
		if err != nil {
			return err
		}
		words = append(words, req.Message)
	}
}

// serve starts the test server on a loopback port, with TLS if cfg is not
// nil, until the test ends, and returns its address.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, testEcho{})
	reflection.Register(grpcstub.Registrar(srv))
	var lis net.Listener
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if cfg != nil {
		lis = tls.NewListener(lis, cfg)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		select {
		case err := <-served:
			if err != nil && !errors.Is(err, rpc.ErrServerStopped) { // ErrServerStopped: stopped before it served
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of Stop")
		}
	})
	return addr
}

// result is what one run of the command did.
type result struct {
	code           int
	stdout, stderr string
}

// muxrpcurl runs the command with args, stdin as its standard input, and
// returns what it did, failing the test if it takes more than 20s.
func muxrpcurl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(stdin), &stdout, &stderr) }()
	select {
	case code := <-done:
		return result{code, stdout.String(), stderr.String()}
	case <-time.After(20 * time.Second):
		t.Fatalf("muxrpcurl %q did not finish within 20s", args)
		panic("unreachable")
	}
}

// want fails the test unless r exited with code, printing stderr if it
// did not.
func (r result) want(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d; stdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

// responses decodes the JSON responses on stdout.
func (r result) responses(t *testing.T) []*echov1.EchoResponse {
	t.Helper()
	var out []*echov1.EchoResponse
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("stdout is not a sequence of JSON objects (%v):\n%s", err, r.stdout)
		}
		m := new(echov1.EchoResponse)
		if err := protojson.Unmarshal(raw, m); err != nil {
			t.Fatalf("response %s: %v", raw, err)
		}
		out = append(out, m)
	}
}

func TestList(t *testing.T) {
	addr := serve(t, nil)
	r := muxrpcurl(t, "", addr, "list")
	r.want(t, exitOK)
	want := "grpc.reflection.v1.ServerReflection\ngrpc.reflection.v1alpha.ServerReflection\nmuxrpc.echo.v1.Echo\n"
	if r.stdout != want {
		t.Errorf("list printed:\n%s\nwant:\n%s", r.stdout, want)
	}
}

func TestListService(t *testing.T) {
	addr := serve(t, nil)
	r := muxrpcurl(t, "", addr, "list", "muxrpc.echo.v1.Echo")
	r.want(t, exitOK)
	want := `muxrpc.echo.v1.Echo.Announce
muxrpc.echo.v1.Echo.Bidi
muxrpc.echo.v1.Echo.ClientStream
muxrpc.echo.v1.Echo.ServerStream
muxrpc.echo.v1.Echo.Unary
`
	if r.stdout != want {
		t.Errorf("list muxrpc.echo.v1.Echo printed:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = muxrpcurl(t, "", addr, "list", "muxrpc.echo.v1.Nope")
	r.want(t, exitFailure)
	if !strings.Contains(r.stderr, `Failed to list methods for service "muxrpc.echo.v1.Nope"`) {
		t.Errorf("stderr: %s", r.stderr)
	}
}

func TestDescribe(t *testing.T) {
	addr := serve(t, nil)
	// The descriptors of generated code have no comments.
	for _, tc := range []struct{ symbol, want string }{
		{"muxrpc.echo.v1.Echo.ServerStream", `muxrpc.echo.v1.Echo.ServerStream is a method:
rpc ServerStream ( .muxrpc.echo.v1.ServerStreamRequest ) returns ( stream .muxrpc.echo.v1.EchoResponse );
`},
		{".muxrpc.echo.v1.EchoResponse", `muxrpc.echo.v1.EchoResponse is a message:
message EchoResponse {
  string message = 1;
  int64 sequence = 2;
}
`},
		{"muxrpc.echo.v1.ServerStreamRequest.count", `muxrpc.echo.v1.ServerStreamRequest.count is a field:
int32 count = 2;
`},
	} {
		r := muxrpcurl(t, "", addr, "describe", tc.symbol)
		r.want(t, exitOK)
		if r.stdout != tc.want {
			t.Errorf("describe %s printed:\n%s\nwant:\n%s", tc.symbol, r.stdout, tc.want)
		}
	}

	r := muxrpcurl(t, "", addr, "describe")
	r.want(t, exitOK)
	for _, s := range []string{"grpc.reflection.v1.ServerReflection is a service:", "muxrpc.echo.v1.Echo is a service:", "rpc Unary ( .muxrpc.echo.v1.EchoRequest ) returns ( .muxrpc.echo.v1.EchoResponse );"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("describe printed no %q:\n%s", s, r.stdout)
		}
	}

	r = muxrpcurl(t, "", addr, "describe", "muxrpc.echo.v1.Nope")
	r.want(t, exitFailure)
	if !strings.Contains(r.stderr, `Failed to resolve symbol "muxrpc.echo.v1.Nope"`) {
		t.Errorf("stderr: %s", r.stderr)
	}
}

func TestUnary(t *testing.T) {
	addr := serve(t, nil)
	for _, method := range []string{"muxrpc.echo.v1.Echo/Unary", "muxrpc.echo.v1.Echo.Unary"} {
		r := muxrpcurl(t, "", "-d", `{"message":"hi"}`, addr, method)
		r.want(t, exitOK)
		resps := r.responses(t)
		if len(resps) != 1 {
			t.Fatalf("%s: %d responses, want 1:\n%s", method, len(resps), r.stdout)
		}
		if got := resps[0].GetMessage(); got != "hi" {
			t.Errorf("%s: message %q, want %q", method, got, "hi")
		}
		if got := resps[0].GetSequence(); got != 7 {
			t.Errorf("%s: sequence %d, want 7", method, got)
		}
		if strings.Contains(r.stdout, "x-unary-header") || strings.Contains(r.stdout, "x-unary-trailer") || r.stderr != "" {
			t.Errorf("%s without -v printed more than the response:\nstdout:\n%s\nstderr:\n%s", method, r.stdout, r.stderr)
		}
	}

	// Without -d, the request is empty.
	r := muxrpcurl(t, "", addr, "muxrpc.echo.v1.Echo/Unary")
	r.want(t, exitOK)
	if resps := r.responses(t); len(resps) != 1 || resps[0].GetMessage() != "" || resps[0].GetSequence() != 7 {
		t.Errorf("an empty request got:\n%s", r.stdout)
	}

	r = muxrpcurl(t, "", "-d", `{"nope":1}`, addr, "muxrpc.echo.v1.Echo/Unary")
	r.want(t, exitFailure)
	if !strings.Contains(r.stderr, "no known field named nope") {
		t.Errorf("a request with an unknown field: stderr %s", r.stderr)
	}
}

func TestServerStream(t *testing.T) {
	addr := serve(t, nil)
	r := muxrpcurl(t, "", "-d", `{"message":"tick","count":3}`, addr, "muxrpc.echo.v1.Echo/ServerStream")
	r.want(t, exitOK)
	resps := r.responses(t)
	if len(resps) != 3 {
		t.Fatalf("%d responses, want 3:\n%s", len(resps), r.stdout)
	}
	for i, m := range resps {
		if m.GetMessage() != "tick" || m.GetSequence() != int64(i) {
			t.Errorf("response %d: message %q sequence %d, want %q %d", i, m.GetMessage(), m.GetSequence(), "tick", i)
		}
	}
}

// TestClientStream sends several requests, read from standard input.
func TestClientStream(t *testing.T) {
	addr := serve(t, nil)
	r := muxrpcurl(t, `{"message":"one"} {"message":"two"}
{"message":"three"}`, "-d", "@", addr, "muxrpc.echo.v1.Echo/ClientStream")
	r.want(t, exitOK)
	if resps := r.responses(t); len(resps) != 1 || resps[0].GetMessage() != "one,two,three" {
		t.Errorf("got:\n%s\nwant one response, one,two,three", r.stdout)
	}
}

// TestMetadata checks that the -H metadata reaches the handler.
func TestMetadata(t *testing.T) {
	addr := serve(t, nil)
	for key, want := range map[string]string{"x-test": "one,two", "x-other": "three: four"} {
		r := muxrpcurl(t, "", "-H", "x-test: one", "-H", "X-Other: three: four", "-H", "x-test:two",
			"-d", `{"message":"metadata:`+key+`"}`, addr, "muxrpc.echo.v1.Echo/Unary")
		r.want(t, exitOK)
		if resps := r.responses(t); len(resps) != 1 || resps[0].GetMessage() != want {
			t.Errorf("the handler saw %s as:\n%s\nwant %q", key, r.stdout, want)
		}
	}
}

// TestVerbose checks that -v prints the headers and trailers the handler
// set, and the request metadata, around the responses.
func TestVerbose(t *testing.T) {
	addr := serve(t, nil)
	r := muxrpcurl(t, "", "-v", "-H", "x-test: sent", "-d", `{"message":"hi"}`, addr, "muxrpc.echo.v1.Echo/Unary")
	r.want(t, exitOK)
	wantInOrder(t, r.stdout,
		"Resolved method descriptor:\nrpc Unary ( .muxrpc.echo.v1.EchoRequest ) returns ( .muxrpc.echo.v1.EchoResponse );\n",
		"Request metadata to send:\nx-test: sent\n",
		"Response headers received:\n",
		"x-unary-header: set by Unary\n",
		"Response contents:\n{\n  \"message\": \"hi\",\n  \"sequence\": \"7\"\n}\n",
		"Response trailers received:\nx-unary-trailer: set by Unary\n",
		"Sent 1 request and received 1 response\n")

	r = muxrpcurl(t, "", "-v", "-d", `{"message":"tick","count":2}`, addr, "muxrpc.echo.v1.Echo/ServerStream")
	r.want(t, exitOK)
	wantInOrder(t, r.stdout,
		"Response headers received:\n",
		"x-stream-header: set by ServerStream\n",
		"Response contents:\n{\n  \"message\": \"tick\"\n}\n",
		"Response contents:\n{\n  \"message\": \"tick\",\n  \"sequence\": \"1\"\n}\n",
		"Response trailers received:\nx-stream-trailer: set by ServerStream\n",
		"Sent 1 request and received 2 responses\n")
}

// wantInOrder fails the test unless each of parts is in s, after the one
// before it.
func wantInOrder(t *testing.T, s string, parts ...string) {
	t.Helper()
	rest := s
	for _, p := range parts {
		i := strings.Index(rest, p)
		if i < 0 {
			t.Fatalf("no %q (after the parts before it) in:\n%s", p, s)
		}
		rest = rest[i+len(p):]
	}
}

// TestStatus checks the exit code and the report of calls that end with
// a status other than OK, and of those that fail before they are made.
func TestStatus(t *testing.T) {
	addr := serve(t, nil)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"handler's status", []string{"-d", `{"message":"fail"}`, addr, "muxrpc.echo.v1.Echo/Unary"},
			statusCodeOffset + int(codes.FailedPrecondition), "ERROR:\n  Code: FailedPrecondition\n  Message: told to fail\n"},
		{"unimplemented method", []string{addr, "muxrpc.echo.v1.Echo/Bidi"},
			statusCodeOffset + int(codes.Unimplemented), "ERROR:\n  Code: Unimplemented\n  Message: method Bidi not implemented\n"},
		// Notifier is in the same file as Echo, so reflection describes
		// it, but the server does not serve it.
		{"unknown service", []string{addr, "muxrpc.echo.v1.Notifier/Notify"},
			statusCodeOffset + int(codes.Unimplemented), "ERROR:\n  Code: Unimplemented\n  Message: unknown service muxrpc.echo.v1.Notifier\n"},
		{"max-time", []string{"-max-time", "0.2", "-d", `{"message":"block"}`, addr, "muxrpc.echo.v1.Echo/Unary"},
			statusCodeOffset + int(codes.DeadlineExceeded), "ERROR:\n  Code: DeadlineExceeded\n"},
		// Methods and services reflection does not know are not called.
		{"method reflection does not know", []string{addr, "muxrpc.echo.v1.Echo/Nope"},
			exitFailure, `Error invoking method "muxrpc.echo.v1.Echo/Nope": service "muxrpc.echo.v1.Echo" does not include a method named "Nope"`},
		{"service reflection does not know", []string{addr, "nope.v1.Nope/Nope"},
			exitFailure, `Error invoking method "nope.v1.Nope/Nope": target server does not expose service "nope.v1.Nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := muxrpcurl(t, "", tc.args...)
			r.want(t, tc.code)
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr:\n%s\nwant it to contain:\n%s", r.stderr, tc.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout: %s", r.stdout)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	addr := serve(t, nil)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"help", []string{"-help"}, exitOK, "Usage:\n\tmuxrpcurl [flags] ADDRESS list [SERVICE]"},
		{"no arguments", nil, exitUsage, "Too few arguments."},
		{"no verb", []string{addr}, exitUsage, "Too few arguments."},
		{"too many", []string{addr, "list", "a", "b"}, exitUsage, "Too many arguments."},
		{"unknown flag", []string{"-plaintext", addr, "list"}, exitUsage, "flag provided but not defined: -plaintext"},
		{"bad duration", []string{"-max-time", "soon", addr, "list"}, exitUsage, `invalid value "soon" for flag -max-time`},
		{"TLS flag without -tls", []string{"-cacert", "ca.pem", addr, "list"}, exitUsage, "The -cacert argument can only be used with -tls."},
		{"cert without key", []string{"-tls", "-cert", "c.pem", addr, "list"}, exitUsage, "The -cert and -key arguments must be used together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := muxrpcurl(t, "", tc.args...)
			r.want(t, tc.code)
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", r.stderr, tc.stderr)
			}
		})
	}
}

// TestDialFailure checks the failures to establish the session: nobody
// listening, and a listener that never answers the handshake.
func TestDialFailure(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	r := muxrpcurl(t, "", addr, "list")
	r.want(t, exitFailure)
	if !strings.Contains(r.stderr, "Failed to dial target host") {
		t.Errorf("stderr: %s", r.stderr)
	}

	// The kernel completes the connection, and nobody accepts it.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	r = muxrpcurl(t, "", "-connect-timeout", "200ms", silent.Addr().String(), "list")
	r.want(t, exitFailure)
	if !strings.Contains(r.stderr, "Failed to dial target host") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("-connect-timeout 200ms gave up after %v", d)
	}
}

// TestTLS runs the command over TLS, with a self-signed server
// certificate given by -cacert, and with a client certificate.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	server := selfSigned(t, dir, "server", x509.ExtKeyUsageServerAuth)
	client := selfSigned(t, dir, "client", x509.ExtKeyUsageClientAuth)
	addr := serve(t, &tls.Config{Certificates: []tls.Certificate{server.cert}})
	mutual := serve(t, &tls.Config{Certificates: []tls.Certificate{server.cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: client.pool})

	r := muxrpcurl(t, "", "-tls", "-cacert", server.certFile, addr, "list")
	r.want(t, exitOK)
	if !strings.Contains(r.stdout, "muxrpc.echo.v1.Echo\n") {
		t.Errorf("list over TLS printed:\n%s", r.stdout)
	}
	r = muxrpcurl(t, "", "-tls", "-cacert", server.certFile, "-d", `{"message":"secret"}`, addr, "muxrpc.echo.v1.Echo/Unary")
	r.want(t, exitOK)
	if resps := r.responses(t); len(resps) != 1 || resps[0].GetMessage() != "secret" {
		t.Errorf("a call over TLS got:\n%s", r.stdout)
	}
	// The certificate names 127.0.0.1 and muxrpc.test.
	muxrpcurl(t, "", "-tls", "-cacert", server.certFile, "-servername", "muxrpc.test", addr, "list").want(t, exitOK)
	muxrpcurl(t, "", "-tls", "-insecure", addr, "list").want(t, exitOK)
	muxrpcurl(t, "", "-tls", "-cert", client.certFile, "-key", client.keyFile, "-cacert", server.certFile, mutual, "list").want(t, exitOK)

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"unknown authority", []string{"-tls", addr, "list"}},
		{"wrong name", []string{"-tls", "-cacert", server.certFile, "-servername", "elsewhere.test", addr, "list"}},
		{"plain TCP to a TLS server", []string{"-connect-timeout", "2s", addr, "list"}},
		{"no client certificate", []string{"-tls", "-cacert", server.certFile, mutual, "list"}},
		{"missing CA file", []string{"-tls", "-cacert", filepath.Join(dir, "nope.pem"), addr, "list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := muxrpcurl(t, "", tc.args...)
			r.want(t, exitFailure)
			t.Logf("stderr: %s", r.stderr)
			if r.stdout != "" {
				t.Errorf("stdout: %s", r.stdout)
			}
		})
	}
}

// certFiles is a self-signed certificate and its key, in memory and in
// PEM files.
type certFiles struct {
	cert              tls.Certificate
	pool              *x509.CertPool // trusts cert
	certFile, keyFile string
}

// selfSigned makes a self-signed certificate for 127.0.0.1 and
// muxrpc.test, for usage, and writes it to dir as name.pem and
// name-key.pem.
func selfSigned(t *testing.T, dir, name string, usage x509.ExtKeyUsage) certFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "muxrpcurl test " + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"muxrpc.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := certFiles{
		cert:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pool:     x509.NewCertPool(),
		certFile: filepath.Join(dir, name+".pem"),
		keyFile:  filepath.Join(dir, name+"-key.pem"),
	}
	f.pool.AddCert(leaf)
	if err := os.WriteFile(f.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
