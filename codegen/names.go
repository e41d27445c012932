package codegen

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/compiler/protogen"
)

// scope is the set of package-level identifiers taken in one Go package.
// A generated identifier that is taken gets a trailing underscore (more
// than one if needed), as protoc-gen-go does for clashing field names.
type scope map[string]bool

// name returns want, or want with underscores appended if it is taken,
// and marks the result taken.
func (s scope) name(want string) string {
	for s[want] {
		want += "_"
	}
	s[want] = true
	return want
}

// reserveProtocGenGo marks taken the package-level identifiers that
// protoc-gen-go declares for f: messages, enums and their values, oneof
// wrappers, extensions, defaults, builders and the file descriptor.
func (s scope) reserveProtocGenGo(f *protogen.File) {
	s[f.GoDescriptorIdent.GoName] = true
	for _, e := range f.Enums {
		s.reserveEnum(e)
	}
	for _, m := range f.Messages {
		s.reserveMessage(m)
	}
	for _, x := range f.Extensions {
		s[x.GoIdent.GoName] = true
	}
}

func (s scope) reserveEnum(e *protogen.Enum) {
	s[e.GoIdent.GoName] = true
	s[e.GoIdent.GoName+"_name"] = true
	s[e.GoIdent.GoName+"_value"] = true
	for _, v := range e.Values {
		s[v.GoIdent.GoName] = true
	}
}

func (s scope) reserveMessage(m *protogen.Message) {
	name := m.GoIdent.GoName
	s[name] = true
	s[name+"_builder"] = true
	for _, f := range m.Fields {
		s["Default_"+name+"_"+f.GoName] = true
		if f.Oneof != nil && !f.Oneof.Desc.IsSynthetic() {
			s[f.GoIdent.GoName] = true
			s[f.GoIdent.GoName+"_case"] = true
		}
	}
	for _, o := range m.Oneofs {
		s["is"+name+"_"+o.GoName] = true
		s[name+"_"+o.GoName+"_case"] = true
		s[name+"_"+o.GoName+"_not_set_case"] = true
	}
	for _, e := range m.Enums {
		s.reserveEnum(e)
	}
	for _, n := range m.Messages {
		s.reserveMessage(n)
	}
	for _, x := range m.Extensions {
		s[x.GoIdent.GoName] = true
	}
}

// reserveProtocGenGoGRPC marks taken the package-level identifiers that
// protoc-gen-go-grpc (v1.6) declares for the services of f, which with
// grpc_coexist=true share the Go package with ours: a service MuxFoo's
// MuxFooClient would otherwise clash with our client of a service Foo.
func (s scope) reserveProtocGenGoGRPC(f *protogen.File) {
	for _, svc := range f.Services {
		base := svc.GoName
		for _, name := range []string{
			base + "Client", unexport(base) + "Client", "New" + base + "Client",
			base + "Server", "Unimplemented" + base + "Server", "Unsafe" + base + "Server",
			"Register" + base + "Server", base + "_ServiceDesc",
		} {
			s[name] = true
		}
		for _, m := range svc.Methods {
			s[base+"_"+m.GoName+"_FullMethodName"] = true
			s["_"+base+"_"+m.GoName+"_Handler"] = true
			if m.Desc.IsStreamingClient() || m.Desc.IsStreamingServer() {
				s[base+"_"+m.GoName+"Client"] = true
				s[base+"_"+m.GoName+"Server"] = true
			}
		}
	}
}

// serviceNames are the package-level identifiers generated for a service.
type serviceNames struct {
	client        string // the client interface, FooClient
	clientImpl    string // its implementation, fooClient
	newClient     string // NewFooClient
	server        string // the server interface, FooServer
	unimplemented string // UnimplementedFooServer
	register      string // RegisterFooServer
	desc          string // Foo_ServiceDesc
}

// methodNames are the identifiers generated for a method.
type methodNames struct {
	goName      string // the method in the client and server interfaces
	fullName    string // Foo_Bar_FullMethodName
	handler     string // _Foo_Bar_Handler
	clientAlias string // Foo_BarClient, for streaming methods
	serverAlias string // Foo_BarServer, for streaming methods
	streamIndex int    // index in the ServiceDesc's Streams, for streaming methods
}

// newServiceNames allocates the identifiers of a service in s, in a fixed
// order, so that the same input always gives the same names. Each
// package-level identifier has prefix right before the service's name
// ("Mux" with grpc_coexist=true, else ""): MuxFooClient, NewMuxFooClient,
// muxFooClient, _MuxFoo_Bar_Handler.
func newServiceNames(s scope, svc *protogen.Service, prefix string) (serviceNames, []methodNames) {
	base := prefix + svc.GoName
	n := serviceNames{
		client:        s.name(base + "Client"),
		clientImpl:    s.name(unexport(base) + "Client"),
		newClient:     s.name("New" + base + "Client"),
		server:        s.name(base + "Server"),
		unimplemented: s.name("Unimplemented" + base + "Server"),
		register:      s.name("Register" + base + "Server"),
		desc:          s.name(base + "_ServiceDesc"),
	}
	methods := make(scope) // method names are unique within the service
	ms := make([]methodNames, len(svc.Methods))
	streams := 0
	for i, m := range svc.Methods {
		goName := methods.name(m.GoName)
		ms[i] = methodNames{
			goName:   goName,
			fullName: s.name(base + "_" + goName + "_FullMethodName"),
			handler:  s.name("_" + base + "_" + goName + "_Handler"),
		}
		if m.Desc.IsStreamingClient() || m.Desc.IsStreamingServer() {
			ms[i].clientAlias = s.name(base + "_" + goName + "Client")
			ms[i].serverAlias = s.name(base + "_" + goName + "Server")
			ms[i].streamIndex = streams
			streams++
		}
	}
	return n, ms
}

// unexport lowercases the first letter of s.
func unexport(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
}

// localNames are the names of parameters and variables in generated
// functions. Each is its usual name unless a package the file imports has
// that name: then the variable would hide the package, and it gets a
// trailing underscore.
type localNames struct {
	ctx, in, out, opts, err, c, cc, stream, x              string
	srv, r, dec, interceptor, info, handler, req, m, t, ok string
}

func newLocalNames(imports map[string]bool) localNames {
	v := func(name string) string {
		for imports[name] {
			name += "_"
		}
		return name
	}
	return localNames{
		ctx: v("ctx"), in: v("in"), out: v("out"), opts: v("opts"), err: v("err"),
		c: v("c"), cc: v("cc"), stream: v("stream"), x: v("x"),
		srv: v("srv"), r: v("r"), dec: v("dec"), interceptor: v("interceptor"),
		info: v("info"), handler: v("handler"), req: v("req"), m: v("m"),
		t: v("t"), ok: v("ok"),
	}
}

// packageOf returns the package name in a qualified identifier
// ("pkg.Name"), or "" for an unqualified one.
func packageOf(qualified string) string {
	i := strings.LastIndexByte(qualified, '.')
	if i < 0 {
		return ""
	}
	return qualified[:i]
}
