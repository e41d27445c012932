package mux

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveHTTP runs an http.Server on sess's NetListener(TypeNet) until the
// test ends. The handler names the side and echoes the request body.
func serveHTTP(t *testing.T, sess *Session, side string) {
	t.Helper()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Side", side)
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sess.NetListener(TypeNet)) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("%s: Serve: %v", side, err)
		}
	})
}

// httpClient returns a client whose connections are streams of sess.
func httpClient(t *testing.T, sess *Session) *http.Client {
	tr := &http.Transport{DialContext: sess.DialContext, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestHTTPBothWays runs net/http over one session in both directions at
// once: each side serves HTTP on its NetListener and calls the other's.
func TestHTTPBothWays(t *testing.T) {
	const requests = 50
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			c, s := pair(t, withTransport(nil, tr), withTransport(nil, tr))
			serveHTTP(t, c, "client")
			serveHTTP(t, s, "server")
			var wg sync.WaitGroup
			errs := make(chan error, 2*requests)
			for _, side := range []struct {
				from *Session
				want string
			}{{c, "server"}, {s, "client"}} {
				hc := httpClient(t, side.from)
				for i := 0; i < requests; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						body := pattern(i, 100+i*1000)
						resp, err := hc.Post(fmt.Sprintf("http://peer/%d", i), "application/octet-stream", bytes.NewReader(body))
						if err != nil {
							errs <- fmt.Errorf("to the %s: %w", side.want, err)
							return
						}
						defer resp.Body.Close()
						got, err := io.ReadAll(resp.Body)
						switch {
						case err != nil:
							errs <- fmt.Errorf("to the %s: reading the body: %w", side.want, err)
						case resp.StatusCode != http.StatusOK || resp.Header.Get("X-Side") != side.want:
							errs <- fmt.Errorf("to the %s: status %d from %q", side.want, resp.StatusCode, resp.Header.Get("X-Side"))
						case !bytes.Equal(got, body):
							errs <- fmt.Errorf("to the %s: body of %d bytes, want %d", side.want, len(got), len(body))
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestNetListenerClose: closing a NetListener ends its Accept with
// net.ErrClosed and leaves the session running.
func TestNetListenerClose(t *testing.T) {
	c, s := pair(t, nil, nil)
	l := s.NetListener(TypeNet)
	if l.Addr().String() != s.LocalAddr().String() {
		t.Errorf("listener address %v, want %v", l.Addr(), s.LocalAddr())
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	l.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	serveEcho(t, s)
	if err := echo(testCtx(t, 5*time.Second), c, []byte("session still up")); err != nil {
		t.Fatal(err)
	}
}

// selfSigned returns a server config with a fresh self-signed certificate
// for 127.0.0.1 and a client config that trusts it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "muxrpc test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool}
	return server, client
}

// TestDialTLSVerifiesTheHostOfItsAddress dials with no ServerName in the
// TLS config, so DialTLS must verify the certificate against the host of
// the address it dialled: an IPv4 address, and an IPv6 one in brackets,
// whose brackets are not part of the name.
func TestDialTLSVerifiesTheHostOfItsAddress(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		t.Run(host, func(t *testing.T) {
			l, err := ListenTLS("tcp", host+":0", serverTLS, nil)
			if err != nil {
				t.Fatalf("loopback %s: %v", host, err)
			}
			t.Cleanup(func() { l.Close() })
			ctx := testCtx(t, 10*time.Second)
			c, err := DialTLS(ctx, "tcp", l.Addr().String(), clientTLS, nil)
			if err != nil {
				t.Fatalf("DialTLS %s: %v", l.Addr(), err)
			}
			c.Kill()
			acceptSession(t, l, 5*time.Second).Kill()
		})
	}
}

// acceptSession runs l.Accept, bounded in time.
func acceptSession(t *testing.T, l *Listener, within time.Duration) *Session {
	t.Helper()
	res := make(chan sessionResult, 1)
	go func() {
		s, err := l.Accept()
		res <- sessionResult{s: s, err: err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.s.Kill() })
		return r.s
	case <-time.After(within):
		// The Accept goroutine returns when the test's cleanup closes l.
		t.Fatalf("Listener.Accept did not return within %v", within)
		return nil
	}
}

// TestListenerDial connects sessions with Listen/Dial and ListenTLS/
// DialTLS over loopback, and checks that a client that connects and sends
// nothing does not delay the Listener's other clients.
func TestListenerDial(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	for _, tr := range transports {
		for _, useTLS := range []bool{false, true} {
			name := tr.String() + "/tcp"
			if useTLS {
				name = tr.String() + "/tls"
			}
			t.Run(name, func(t *testing.T) {
				// A long handshake timeout: a listener that handshakes one
				// connection at a time would be stuck behind the silent one.
				cfg := withTransport(&Config{HandshakeTimeout: time.Minute}, tr)
				var l *Listener
				var err error
				if useTLS {
					l, err = ListenTLS("tcp", "127.0.0.1:0", serverTLS, cfg)
				} else {
					l, err = Listen("tcp", "127.0.0.1:0", cfg)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				ctx := testCtx(t, 10*time.Second)

				silent, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer silent.Close()

				var c *Session
				if useTLS {
					c, err = DialTLS(ctx, "tcp", l.Addr().String(), clientTLS, cfg)
				} else {
					c, err = Dial(ctx, "tcp", l.Addr().String(), cfg)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Kill() })
				s := acceptSession(t, l, 5*time.Second)
				if !c.IsClient() || s.IsClient() {
					t.Fatal("IsClient is wrong")
				}
				if s.RemoteAddr().String() != c.LocalAddr().String() {
					t.Fatalf("server sees %v, client is %v", s.RemoteAddr(), c.LocalAddr())
				}
				if useTLS {
					for _, sess := range []*Session{c, s} {
						tc, ok := sess.Conn().(*tls.Conn)
						if !ok || !tc.ConnectionState().HandshakeComplete {
							t.Fatalf("session conn %T is not a completed TLS connection", sess.Conn())
						}
					}
				}
				serveEcho(t, s)
				if err := echo(ctx, c, pattern(1, 100000)); err != nil {
					t.Fatal(err)
				}

				// Closing the Listener ends the silent handshake, not the
				// sessions it accepted.
				closed := make(chan struct{})
				go func() { l.Close(); close(closed) }()
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					t.Fatal("Listener.Close waits for the silent handshake")
				}
				if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
				}
				silent.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, silent); err != nil && !isConnReset(err) {
					t.Fatalf("silent connection not closed: %v", err)
				}
				if err := echo(ctx, c, []byte("after the Listener closed")); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestListenerBadHandshakes: connections that fail their handshake are
// dropped, and the Listener goes on accepting.
func TestListenerBadHandshakes(t *testing.T) {
	l, err := Listen("tcp", "127.0.0.1:0", &Config{HandshakeTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for _, junk := range []string{"GET / HTTP/1.1\r\n\r\n", "MUXRPC\x00\x07", ""} {
		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte(junk))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, "tcp", l.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	s := acceptSession(t, l, 5*time.Second)
	serveEcho(t, s)
	if err := echo(ctx, c, []byte("hello")); err != nil {
		t.Fatal(err)
	}
}

// TestDialFailures: Dial reports a refused connection and a context that
// ends during the handshake.
func TestDialFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Dial(testCtx(t, 5*time.Second), "tcp", addr, nil); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}

	// A server that accepts and says nothing: the context ends the
	// handshake.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			conns <- c
		}
		close(conns)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, "tcp", ln.Addr().String(), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial to a silent server: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Dial's context ended the handshake only after %v", d)
	}
	if c := <-conns; c != nil {
		c.Close()
	}
}

// TestDialTLSRefusesToOfferH2: a muxrpc client that offered HTTP/2 by
// ALPN would be taken for gRPC by a port shared with gRPC (PROTOCOL.md,
// section 20), so DialTLS refuses before it dials.
func TestDialTLSRefusesToOfferH2(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	l, err := ListenTLS("tcp", "127.0.0.1:0", serverTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	clientTLS.NextProtos = []string{"muxrpc", "h2"}
	_, err = DialTLS(testCtx(t, 5*time.Second), "tcp", l.Addr().String(), clientTLS, nil)
	if err == nil || !strings.Contains(err.Error(), `"h2"`) {
		t.Fatalf("DialTLS offering h2: %v", err)
	}
}
