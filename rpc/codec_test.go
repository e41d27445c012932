package rpc

import (
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

// legacyString is google.protobuf.StringValue as github.com/golang/protobuf
// generated messages before the current API: a struct with the older
// API's methods only, which gRPC-Go's codec accepts and so, then, must
// muxrpc's (grpcurl calls with jhump/protoreflect's dynamic.Message, a
// message of that API).
type legacyString struct {
	Value string `protobuf:"bytes,1,opt,name=value,proto3" json:"value,omitempty"`
}

func (m *legacyString) Reset()         { *m = legacyString{} }
func (m *legacyString) String() string { return m.Value }
func (*legacyString) ProtoMessage()    {}

// TestLegacyMessages calls with messages of the older protobuf API, in
// a unary call and a streaming one, against handlers that use the
// current API.
func TestLegacyMessages(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	srv := NewServer()
	srv.RegisterService(&echoDesc, &echoImpl{name: "server"})
	p := dial(t, serve(t, srv))

	var out legacyString
	if err := p.Invoke(ctx, "/test.Echo/Unary", &legacyString{Value: "hi"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Value != "server:hi" {
		t.Fatalf("unary: got %q, want %q", out.Value, "server:hi")
	}

	s, err := p.NewStream(ctx, &echoDesc.Streams[2], "/test.Echo/Bidi")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&legacyString{Value: "one"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		var m legacyString
		err := s.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Value)
	}
	want, _ := (&echoImpl{name: "server"}).Unary(ctx, wrapperspb.String("one"))
	if len(got) != 1 || got[0] != want.Value {
		t.Fatalf("bidi: got %q, want [%q]", got, want.Value)
	}
}
