package interceptors_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	grpcprotovalidate "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/validator"
	"github.com/muxrpc/muxrpc/interceptors"
	"github.com/muxrpc/muxrpc/rpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// checkedString is a StringValue with the Validate method that
// protoc-gen-validate generates, which the validator interceptors look
// for: an empty value is invalid. It is a proto.Message through the
// embedded StringValue, and has its wire format.
type checkedString struct {
	*wrapperspb.StringValue
}

func newChecked(v string) *checkedString {
	return &checkedString{wrapperspb.String(v)}
}

func (c *checkedString) Validate() error {
	if c.GetValue() == "" {
		return errors.New("value must not be empty")
	}
	return nil
}

// checkedDesc is test.Checked: a unary method and a client-streaming one,
// whose requests are checkedStrings.
var checkedDesc = rpc.ServiceDesc{
	ServiceName: "test.Checked",
	Methods: []rpc.MethodDesc{{
		MethodName: "Check",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor rpc.UnaryServerInterceptor) (any, error) {
			in := newChecked("")
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				srv.(*counter).n.Add(1)
				return wrapperspb.String("ok:" + req.(*checkedString).GetValue()), nil
			}
			if interceptor == nil {
				return h(ctx, in)
			}
			return interceptor(ctx, in, &rpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Checked/Check"}, h)
		},
	}},
	Streams: []rpc.StreamDesc{{
		StreamName:    "CheckAll",
		ClientStreams: true,
		Handler: func(srv any, s rpc.ServerStream) error {
			var all []string
			for {
				in := newChecked("")
				err := s.RecvMsg(in)
				if errors.Is(err, io.EOF) {
					return s.SendMsg(wrapperspb.String(strings.Join(all, ",")))
				}
				if err != nil {
					return err
				}
				all = append(all, in.GetValue())
			}
		},
	}},
}

// counter counts the calls that reached a handler.
type counter struct{ n atomic.Int32 }

func TestValidator(t *testing.T) {
	impl := &counter{}
	srv := rpc.NewServer(
		interceptors.UnaryServer(validator.UnaryServerInterceptor()),
		interceptors.StreamServer(validator.StreamServerInterceptor()),
	)
	srv.RegisterService(&checkedDesc, impl)
	addr := serve(t, srv)
	p := dial(t, addr)
	ctx := testCtx(t)

	out := new(wrapperspb.StringValue)
	if err := p.Invoke(ctx, "/test.Checked/Check", wrapperspb.String("fine"), out); err != nil || out.Value != "ok:fine" {
		t.Fatalf("valid request: %v, %v", out, err)
	}
	err := p.Invoke(ctx, "/test.Checked/Check", wrapperspb.String(""), out)
	wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(status.Convert(err).Message(), "value must not be empty") {
		t.Errorf("message %q", status.Convert(err).Message())
	}
	if n := impl.n.Load(); n != 1 {
		t.Errorf("%d calls reached the handler, want 1", n)
	}

	// Each message of a stream is validated as the handler receives it.
	cs, err := p.NewStream(ctx, &checkedDesc.Streams[0], "/test.Checked/CheckAll")
	if err != nil {
		t.Fatal(err)
	}
	cs.SendMsg(wrapperspb.String("a"))
	cs.SendMsg(wrapperspb.String(""))
	cs.CloseSend()
	wantCode(t, cs.RecvMsg(out), codes.InvalidArgument)

	// On the client, an invalid request never leaves.
	checking := dial(t, addr, interceptors.UnaryClient(validator.UnaryClientInterceptor()))
	err = checking.Invoke(ctx, "/test.Checked/Check", newChecked(""), out)
	wantCode(t, err, codes.InvalidArgument)
	if n := impl.n.Load(); n != 1 {
		t.Errorf("%d calls reached the handler, want 1", n)
	}
	if err := checking.Invoke(ctx, "/test.Checked/Check", newChecked("x"), out); err != nil || out.Value != "ok:x" {
		t.Fatalf("valid request through the client interceptor: %v, %v", out, err)
	}
}

// greetingDesc describes muxrpc.test.Greeting, a message whose name has a
// buf.validate rule (min_len 3). It is built at run time, as protoc would
// build it from:
//
//	import "buf/validate/validate.proto";
//	message Greeting { string name = 1 [(buf.validate.field).string.min_len = 3]; }
func greetingDesc(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	rules := &descriptorpb.FieldOptions{}
	proto.SetExtension(rules, validate.E_Field, &validate.FieldRules{
		Type: &validate.FieldRules_String_{String_: &validate.StringRules{MinLen: proto.Uint64(3)}},
	})
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("muxrpc/test/greeting.proto"),
		Package:    proto.String("muxrpc.test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"buf/validate/validate.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Greeting"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name:     proto.String("name"),
				JsonName: proto.String("name"),
				Number:   proto.Int32(1),
				Type:     descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
				Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
				Options:  rules,
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Greeting")
}

// greeterDesc is test.Greeter: unary Greet and server-streaming
// GreetStream, on dynamic Greeting messages.
func greeterDesc(md protoreflect.MessageDescriptor) *rpc.ServiceDesc {
	name := md.Fields().ByName("name")
	greet := func(req any) *wrapperspb.StringValue {
		return wrapperspb.String("hello " + req.(proto.Message).ProtoReflect().Get(name).String())
	}
	return &rpc.ServiceDesc{
		ServiceName: "test.Greeter",
		Methods: []rpc.MethodDesc{{
			MethodName: "Greet",
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor rpc.UnaryServerInterceptor) (any, error) {
				in := dynamicpb.NewMessage(md)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) { return greet(req), nil }
				if interceptor == nil {
					return h(ctx, in)
				}
				return interceptor(ctx, in, &rpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Greeter/Greet"}, h)
			},
		}},
		Streams: []rpc.StreamDesc{{
			StreamName:    "GreetStream",
			ServerStreams: true,
			Handler: func(srv any, s rpc.ServerStream) error {
				in := dynamicpb.NewMessage(md)
				if err := s.RecvMsg(in); err != nil {
					return err
				}
				return s.SendMsg(greet(in))
			},
		}},
	}
}

func TestProtovalidate(t *testing.T) {
	md := greetingDesc(t)
	v, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(
		interceptors.UnaryServer(grpcprotovalidate.UnaryServerInterceptor(v)),
		interceptors.StreamServer(grpcprotovalidate.StreamServerInterceptor(v)),
	)
	desc := greeterDesc(md)
	srv.RegisterService(desc, struct{}{})
	p := dial(t, serve(t, srv))
	ctx := testCtx(t)
	greeting := func(name string) proto.Message {
		m := dynamicpb.NewMessage(md)
		m.Set(md.Fields().ByName("name"), protoreflect.ValueOfString(name))
		return m
	}

	out := new(wrapperspb.StringValue)
	if err := p.Invoke(ctx, "/test.Greeter/Greet", greeting("alice"), out); err != nil || out.Value != "hello alice" {
		t.Fatalf("valid request: %v, %v", out, err)
	}
	err = p.Invoke(ctx, "/test.Greeter/Greet", greeting("al"), out)
	wantCode(t, err, codes.InvalidArgument)
	wantViolation(t, err, "name", "string.min_len")

	cs, err := p.NewStream(ctx, &desc.Streams[0], "/test.Greeter/GreetStream")
	if err != nil {
		t.Fatal(err)
	}
	cs.SendMsg(greeting("al"))
	cs.CloseSend()
	err = cs.RecvMsg(out)
	wantCode(t, err, codes.InvalidArgument)
	wantViolation(t, err, "name", "string.min_len")
}

// wantViolation checks that err's status details, which crossed the
// connection, hold the violation of rule on field.
func wantViolation(t *testing.T, err error, field, rule string) {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		vs, ok := d.(*validate.Violations)
		if !ok {
			continue
		}
		for _, v := range vs.GetViolations() {
			if protovalidate.FieldPathString(v.GetField()) == field && v.GetRuleId() == rule {
				return
			}
		}
		t.Fatalf("violations %v lack %s on %s", vs, rule, field)
	}
	t.Fatalf("no buf.validate.Violations in the details of %v", err)
}
