// Command tls shows mutual TLS: the server and the client each present a
// certificate that a certificate authority of their own issued, and each
// sees who the other is. The server's handlers read the client's
// certificate from the call (gRPC's peer.FromContext and its
// credentials.TLSInfo) and the session's Identity (rpc.IdentityFromContext,
// which the server's Authenticator takes from the certificate); the client
// reads the server's certificate from its Peer (Peer.Stats().TLS), and so
// does the callback the server makes into the client, on the same TLS
// connection.
//
// By default the server and the client run in one process, on a loopback
// port, with certificates made in memory at start-up (a CA, a certificate
// for the server at localhost and 127.0.0.1, one for the client
// "client-1"):
//
//	go run ./examples/tls
//
// or in two processes, which share the certificates through a directory,
// -certs (by default muxrpc-tls-example in the temporary directory): the
// server writes a CA's certificate and the server's and the client's
// certificates and keys there (ca.pem, server.pem, server-key.pem,
// client.pem, client-key.pem) if it has no ca.pem yet, and the client
// reads them. The CA's own key is never written: to start afresh, delete
// the directory. The server stops gracefully on Ctrl-C or SIGTERM.
//
//	go run ./examples/tls -listen 127.0.0.1:7070
//	go run ./examples/tls -connect 127.0.0.1:7070
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func main() {
	listen := flag.String("listen", "", "only serve, on this address")
	connect := flag.String("connect", "", "only run the client, against this address")
	certs := flag.String("certs", filepath.Join(os.TempDir(), "muxrpc-tls-example"),
		"with -listen or -connect, the directory of the certificates (the server writes them if it has no ca.pem)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *listen != "":
		var cfg *tls.Config
		if cfg, err = serverTLSIn(*certs); err == nil {
			var lis net.Listener
			if lis, err = tls.Listen("tcp", *listen, cfg); err == nil {
				log.Printf("serving on %s with the certificates of %s", lis.Addr(), *certs)
				err = serve(ctx, lis, os.Stdout)
			}
		}
	case *connect != "":
		var files map[string][]byte
		if files, err = readCerts(*certs, "client"); err == nil {
			err = runClient(ctx, os.Stdout, *connect, files)
		}
	default:
		err = runBoth(ctx, os.Stdout)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runBoth makes the certificates in memory, serves on a loopback port, runs
// the client against it, and stops the server.
func runBoth(ctx context.Context, out io.Writer) error {
	files, err := newCerts()
	if err != nil {
		return err
	}
	cfg, err := serverTLS(files)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srvCtx, stopServer := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(srvCtx, tls.NewListener(lis, cfg), out) }()
	err = runClient(ctx, out, lis.Addr().String(), files)
	stopServer()
	return errors.Join(err, <-served)
}

// serverTLSIn returns the server's TLS configuration with the
// certificates in dir, which it makes first if dir has none.
func serverTLSIn(dir string) (*tls.Config, error) {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); errors.Is(err, fs.ErrNotExist) {
		if err := writeCerts(dir); err != nil {
			return nil, err
		}
		log.Printf("wrote new certificates to %s", dir)
	}
	files, err := readCerts(dir, "server")
	if err != nil {
		return nil, err
	}
	return serverTLS(files)
}

// serve serves Echo on lis until ctx ends, then stops gracefully. Its
// Authenticator names each session after the subject of the client's
// certificate, which the TLS handshake has verified already.
func serve(ctx context.Context, lis net.Listener, out io.Writer) error {
	srv := rpc.NewServer(rpc.WithAuthenticator(func(ctx context.Context, h *rpc.SessionHello) (rpc.Identity, error) {
		if h.TLS == nil || len(h.TLS.PeerCertificates) == 0 {
			return rpc.Identity{}, status.Error(codes.Unauthenticated, "no client certificate")
		}
		return rpc.Identity{Name: h.TLS.PeerCertificates[0].Subject.CommonName}, nil
	}))
	echov1.RegisterEchoServer(srv, echoServer{out: out})
	defer context.AfterFunc(ctx, srv.GracefulStop)()
	return srv.Serve(lis)
}

// echoServer implements Unary and Announce of Echo.
type echoServer struct {
	echov1.UnimplementedEchoServer
	out io.Writer
}

// Unary prints who called, from the call's TLS state as gRPC's
// peer.FromContext gives it, and answers.
func (s echoServer) Unary(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	var info credentials.TLSInfo
	if p, ok := peer.FromContext(ctx); ok {
		info, _ = p.AuthInfo.(credentials.TLSInfo)
	}
	if len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	cert := info.State.VerifiedChains[0][0]
	fmt.Fprintf(s.out, "server: Unary(%q) from %q, certificate issued by %q, over %s\n",
		req.Message, cert.Subject.CommonName, cert.Issuer.CommonName, tls.VersionName(info.State.Version))
	return &echov1.EchoResponse{Message: req.Message}, nil
}

// Announce calls the caller's Notifier back, on the caller's own TLS
// connection, once per message.
func (s echoServer) Announce(ctx context.Context, req *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	id, _ := rpc.IdentityFromContext(ctx)
	fmt.Fprintf(s.out, "server: Announce from %q, calling it back\n", id.Name)
	caller := echov1.NewNotifierClient(rpc.PeerFromContext(ctx))
	for i, m := range req.Messages {
		if _, err := caller.Notify(ctx, &echov1.Notification{Message: m, Sequence: int64(i)}); err != nil {
			return nil, err
		}
	}
	return &echov1.AnnounceResponse{Delivered: int32(len(req.Messages))}, nil
}

// runClient dials addr over mutual TLS with the client's certificate of
// files, exposing a Notifier, and makes two calls.
func runClient(ctx context.Context, out io.Writer, addr string, files map[string][]byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg, err := clientTLS(files)
	if err != nil {
		return err
	}
	callbacks := rpc.NewServer()
	echov1.RegisterNotifierServer(callbacks, notifier{out: out})
	p, err := rpc.Dial(ctx, addr, rpc.WithTLS(cfg), rpc.WithServices(callbacks))
	if err != nil {
		return err
	}
	defer p.Shutdown(ctx)
	st := p.Stats().TLS
	server := st.PeerCertificates[0]
	fmt.Fprintf(out, "client: connected to %q, certificate issued by %q, over %s\n",
		server.Subject.CommonName, server.Issuer.CommonName, tls.VersionName(st.Version))

	echo := echov1.NewEchoClient(p)
	resp, err := echo.Unary(ctx, &echov1.EchoRequest{Message: "hello"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "client: unary: %s\n", resp.Message)
	ann, err := echo.Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"hello from the server"}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "client: announce: the server delivered %d notification\n", ann.Delivered)
	return nil
}

// notifier is the service the client exposes to the server.
type notifier struct {
	echov1.UnimplementedNotifierServer
	out io.Writer
}

// Notify prints who called back, from the Peer of the client's session:
// the server, whose certificate the client verified when it dialed.
func (n notifier) Notify(ctx context.Context, note *echov1.Notification) (*emptypb.Empty, error) {
	server := rpc.PeerFromContext(ctx).Stats().TLS.PeerCertificates[0]
	fmt.Fprintf(n.out, "client: %q called back: %q\n", server.Subject.CommonName, note.Message)
	return &emptypb.Empty{}, nil
}

// Certificates.

// The names of the certificates' files, the CA's last: the server makes
// new certificates where it finds no ca.pem, so that it makes them again
// after a run that stopped half-way through writing them.
var certFiles = []string{"server.pem", "server-key.pem", "client.pem", "client-key.pem", "ca.pem"}

// newCerts makes a CA, a certificate and key for the server at localhost,
// 127.0.0.1 and ::1, and one for the client "client-1", and returns them
// in PEM by the names of certFiles. The CA's key is thrown away: nothing
// else can be issued under it.
func newCerts() (map[string][]byte, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "muxrpc tls example CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"ca.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	leaves := []struct {
		name string
		tmpl x509.Certificate
	}{
		{"server", x509.Certificate{
			Subject:     pkix.Name{CommonName: "tls-example-server"},
			DNSNames:    []string{"localhost"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}},
		{"client", x509.Certificate{
			Subject:     pkix.Name{CommonName: "client-1"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
	}
	for i, leaf := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := leaf.tmpl
		tmpl.SerialNumber = big.NewInt(int64(i + 2))
		tmpl.NotBefore, tmpl.NotAfter = ca.NotBefore, ca.NotAfter
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		files[leaf.name+".pem"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		files[leaf.name+"-key.pem"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	return files, nil
}

// writeCerts makes new certificates and writes them to dir, readable by
// their owner only.
func writeCerts(dir string) error {
	files, err := newCerts()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, name := range certFiles {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o600); err != nil {
			return err
		}
	}
	return nil
}

// readCerts reads from dir the CA's certificate and the certificate and
// key of role, "server" or "client".
func readCerts(dir, role string) (map[string][]byte, error) {
	files := make(map[string][]byte)
	for _, name := range []string{"ca.pem", role + ".pem", role + "-key.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w (the server writes the certificates when it starts; -certs must name the same directory for both)", err)
		}
		files[name] = b
	}
	return files, nil
}

// keyPair returns the CA's certificate as a pool and role's certificate.
func keyPair(files map[string][]byte, role string) (*x509.CertPool, tls.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(files["ca.pem"]) {
		return nil, tls.Certificate{}, errors.New("ca.pem holds no certificate")
	}
	cert, err := tls.X509KeyPair(files[role+".pem"], files[role+"-key.pem"])
	return pool, cert, err
}

// serverTLS is the server's TLS configuration: its certificate, and a
// certificate the CA issued required of every client.
func serverTLS(files map[string][]byte) (*tls.Config, error) {
	pool, cert, err := keyPair(files, "server")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// clientTLS is the client's TLS configuration: its certificate, and the CA
// as the only one it trusts for the server's.
func clientTLS(files map[string][]byte) (*tls.Config, error) {
	pool, cert, err := keyPair(files, "client")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS13,
	}, nil
}
