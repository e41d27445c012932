package rpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log"
	"math/big"
	"net"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	echov1 "github.com/muxrpc/muxrpc/proto/echo/v1"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// greeterService is the server's side of echo.v1.Echo: each method a
// method of the generated EchoServer interface.
type greeterService struct {
	echov1.UnimplementedEchoServer // answers Unimplemented for the rest
}

// Unary answers with the caller's metadata, and refuses an empty
// message with a status that carries details.
func (greeterService) Unary(ctx context.Context, in *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	if in.Message == "" {
		st, _ := status.New(codes.InvalidArgument, "message is empty").WithDetails(
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "message", Description: "must not be empty"}}})
		return nil, st.Err()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	rpc.SetTrailer(ctx, metadata.Pairs("served-by", "greeter"))
	return &echov1.EchoResponse{Message: "hello " + in.Message + ", from " + md.Get("user")[0]}, nil
}

// Announce calls the caller back: the Notifier service its client
// exposes, on the caller's own connection.
func (greeterService) Announce(ctx context.Context, in *echov1.AnnounceRequest) (*echov1.AnnounceResponse, error) {
	back := echov1.NewNotifierClient(rpc.PeerFromContext(ctx))
	for i, m := range in.Messages {
		if _, err := back.Notify(ctx, &echov1.Notification{Message: m, Sequence: int64(i)}); err != nil {
			return nil, err
		}
	}
	return &echov1.AnnounceResponse{Delivered: int32(len(in.Messages))}, nil
}

// printingNotifier is the client's callback service.
type printingNotifier struct {
	echov1.UnimplementedNotifierServer
}

func (printingNotifier) Notify(_ context.Context, n *echov1.Notification) (*emptypb.Empty, error) {
	fmt.Printf("callback %d: %s\n", n.Sequence, n.Message)
	return &emptypb.Empty{}, nil
}

// A service from a .proto file, step by step: the server registers the
// generated service and serves; the client dials, exposing a callback
// service on its connection, and calls with a deadline and metadata; a
// handler calls the client back; errors carry status details; the server
// stops gracefully.
func Example_service() {
	// The server.
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, greeterService{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	// The client, which serves Notifier on the connection it dials.
	callbacks := rpc.NewServer()
	echov1.RegisterNotifierServer(callbacks, printingNotifier{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // the calls' deadline
	defer cancel()
	p, err := rpc.Dial(ctx, lis.Addr().String(), rpc.WithServices(callbacks))
	if err != nil {
		log.Fatal(err)
	}
	client := echov1.NewEchoClient(p)

	// A call with metadata, and the trailer it gets back.
	var trailer metadata.MD
	reply, err := client.Unary(metadata.AppendToOutgoingContext(ctx, "user", "ada"), &echov1.EchoRequest{Message: "world"}, rpc.Trailer(&trailer))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Message, trailer.Get("served-by"))

	// A failing call: its status, and the details it carries.
	_, err = client.Unary(ctx, &echov1.EchoRequest{})
	st := status.Convert(err)
	fmt.Println(st.Code(), st.Message(), st.Details()[0].(*errdetails.BadRequest).FieldViolations[0].Field)

	// The server calls the client back from inside a handler.
	got, err := client.Announce(ctx, &echov1.AnnounceRequest{Messages: []string{"first", "second"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered", got.Delivered)

	// Graceful shutdown: the client gets a GoAway, calls in flight
	// finish, and Serve returns.
	srv.GracefulStop()
	fmt.Println("Serve returned", <-served)
	p.Close()
	// Output:
	// hello world, from ada [greeter]
	// InvalidArgument message is empty message
	// callback 0: first
	// callback 1: second
	// delivered 2
	// Serve returned <nil>
}

// Mutual TLS: the server serves on a TLS listener that asks for client
// certificates, the client dials with rpc.WithTLS, and each side sees
// the other's certificate: a handler through peer.FromContext, the client
// through its Peer's Stats.
func Example_mutualTLS() {
	ca, serverCert, clientCert := newTestCerts("server.example", "client-1")
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, identityEcho{})
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	ctx := context.Background()
	p, err := rpc.Dial(ctx, lis.Addr().String(), rpc.WithTLS(&tls.Config{
		Certificates: []tls.Certificate{clientCert},
		RootCAs:      pool,
		ServerName:   "server.example",
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	reply, err := echov1.NewEchoClient(p).Unary(ctx, &echov1.EchoRequest{Message: "who am I?"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Message)
	fmt.Println("the client sees", p.Stats().TLS.PeerCertificates[0].Subject.CommonName, "over", p.Stats().Transport)
	// Output:
	// the server sees client-1
	// the client sees server.example over native
}

// identityEcho answers with the client certificate's name it sees.
type identityEcho struct{ echov1.UnimplementedEchoServer }

func (identityEcho) Unary(ctx context.Context, _ *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	p, _ := peer.FromContext(ctx)
	tlsInfo := p.AuthInfo.(credentials.TLSInfo)
	return &echov1.EchoResponse{Message: "the server sees " + tlsInfo.State.PeerCertificates[0].Subject.CommonName}, nil
}

// newTestCerts makes a CA and a server and a client certificate it
// signed, in memory.
func newTestCerts(serverName, clientName string) (*x509.Certificate, tls.Certificate, tls.Certificate) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return ca, leaf(2, serverName, x509.ExtKeyUsageServerAuth), leaf(3, clientName, x509.ExtKeyUsageClientAuth)
}

// Tests need no network: a session runs over any net.Conn, net.Pipe's
// included, as gRPC's bufconn gives tests an in-memory listener.
func Example_netPipe() {
	srv := rpc.NewServer()
	echov1.RegisterEchoServer(srv, greeterService{})
	serverEnd, clientEnd := net.Pipe()
	go srv.ServeConn(serverEnd)
	defer srv.Stop()

	sess, err := mux.Client(clientEnd, nil)
	if err != nil {
		log.Fatal(err)
	}
	p := rpc.NewPeer(sess)
	defer p.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "user", "a test")
	reply, err := echov1.NewEchoClient(p).Unary(ctx, &echov1.EchoRequest{Message: "pipe"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Message)
	// Output: hello pipe, from a test
}
