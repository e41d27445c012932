package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/fullstorydev/grpcurl"
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/grpcreflect"
	"github.com/muxrpc/muxrpc/rpc"
	"github.com/muxrpc/muxrpc/rpc/grpcstub"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/descriptorpb"
)

// The exit codes, grpcurl's.
const (
	exitOK      = 0
	exitFailure = 1 // anything but a call's status: dialing, reflection, parsing
	exitUsage   = 2
	// A call that ends with a status other than OK exits with
	// statusCodeOffset plus the status code.
	statusCodeOffset = 64
)

const usageText = `Usage:
	muxrpcurl [flags] ADDRESS list [SERVICE]
	muxrpcurl [flags] ADDRESS describe [SYMBOL]
	muxrpcurl [flags] [-d JSON] ADDRESS SERVICE/METHOD

muxrpcurl is grpcurl for muxrpc: it talks to a muxrpc server, over plain
TCP or, with -tls, TLS, and learns its services from the gRPC reflection
service (grpc.reflection.v1 or v1alpha) served over muxrpc.

ADDRESS is "host:port", or "unix:/path" for a Unix socket.

'list' lists the services the server exposes or, given a fully-qualified
service name, the methods of that service.

'describe' shows the descriptor of a fully-qualified service, method,
message, field, enum or enum value name, or of every service without one.

Otherwise SERVICE/METHOD (or SERVICE.METHOD) names the method to call, with
the request messages given in JSON by -d: one object for a unary or
server-streaming method (an empty request without -d), any number of them
for a client-streaming or bidirectional one. Each response message is
printed in JSON; -v also prints the response headers and trailers.

Exit status: 0 on success; 2 for a usage error; 1 for any other failure
before the call completes; 64 plus the status code when the call ends with
a status other than OK (76 for Unimplemented), the code and message printed
on standard error.

Flags:
`

// options are the command's flags.
type options struct {
	data           string
	headers        multiFlag
	useTLS         bool
	insecure       bool
	cacert         string
	cert, key      string
	serverName     string
	connectTimeout time.Duration
	maxTime        time.Duration
	verbose        bool
	emitDefaults   bool
}

// multiFlag is a flag that may be given several times.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ", ") }

func (m *multiFlag) Set(v string) error {
	*m = append(*m, v)
	return nil
}

// durationFlag is a flag of a duration given in seconds, as grpcurl's are
// ("2.5"), or as a Go duration ("2500ms").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		s, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil {
			return errors.New("not a number of seconds nor a duration")
		}
		d = time.Duration(s * float64(time.Second))
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	*f.d = d
	return nil
}

// run runs the command with the arguments args (without the program's
// name) and returns its exit code. The request messages of -d @ come from
// stdin.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("muxrpcurl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	o := options{connectTimeout: 10 * time.Second}
	fs.StringVar(&o.data, "d", "", "the request `JSON`: one object, or several for a client-streaming method; @ reads them from standard input")
	fs.Var(&o.headers, "H", "request metadata, a `'name: value'` pair, sent with the call and the reflection requests; may be repeated")
	fs.BoolVar(&o.useTLS, "tls", false, "use TLS (without it, plain TCP)")
	fs.BoolVar(&o.insecure, "insecure", false, "with -tls, skip the verification of the server's certificate")
	fs.StringVar(&o.cacert, "cacert", "", "with -tls, the `file` of PEM CA certificates to verify the server with (default: the system's)")
	fs.StringVar(&o.cert, "cert", "", "with -tls and -key, the `file` of the PEM client certificate to present")
	fs.StringVar(&o.key, "key", "", "with -tls and -cert, the `file` of the PEM private key of the client certificate")
	fs.StringVar(&o.serverName, "servername", "", "with -tls, the `name` to verify the server's certificate against (default: the host in ADDRESS)")
	fs.Var(durationFlag{&o.connectTimeout}, "connect-timeout", "the longest wait for the session to be established, in `seconds` or as a Go duration")
	fs.Var(durationFlag{&o.maxTime}, "max-time", "the longest the whole operation may take, in `seconds` or as a Go duration (default: no limit)")
	fs.BoolVar(&o.verbose, "v", false, "verbose: also print the method's descriptor, the request metadata, and the response headers and trailers")
	fs.BoolVar(&o.emitDefaults, "emit-defaults", false, "print the fields that have their default values in the responses too")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // the flag package printed why, and the usage
	}

	rest := fs.Args()
	if len(rest) < 2 {
		return usageError(stderr, "Too few arguments.")
	}
	address, verb, rest := rest[0], rest[1], rest[2:]
	var symbol string
	switch verb {
	case "list", "describe":
		if len(rest) > 0 {
			symbol, rest = rest[0], rest[1:]
		}
		if o.data != "" {
			fmt.Fprintf(stderr, "Warning: the -d argument is not used with '%s'.\n", verb)
		}
	default:
		symbol, verb = verb, "call"
	}
	if len(rest) > 0 {
		return usageError(stderr, "Too many arguments.")
	}
	if !o.useTLS {
		for _, f := range []struct {
			name string
			set  bool
		}{{"insecure", o.insecure}, {"cacert", o.cacert != ""}, {"cert", o.cert != ""}, {"key", o.key != ""}, {"servername", o.serverName != ""}} {
			if f.set {
				return usageError(stderr, fmt.Sprintf("The -%s argument can only be used with -tls.", f.name))
			}
		}
	}
	if (o.cert == "") != (o.key == "") {
		return usageError(stderr, "The -cert and -key arguments must be used together and both be present.")
	}

	if o.maxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.maxTime)
		defer cancel()
	}
	peer, err := dial(ctx, address, &o)
	if err != nil {
		return failure(stderr, err, "Failed to dial target host %q", address)
	}
	defer peer.Close()
	cc := grpcstub.Conn(peer)
	// The reflection requests carry the -H metadata too, as grpcurl's do.
	refClient := grpcreflect.NewClientAuto(metadata.NewOutgoingContext(ctx, grpcurl.MetadataFromHeaders(o.headers)), cc)
	defer refClient.Reset() // ends the reflection stream, before the session closes
	source := grpcurl.DescriptorSourceFromServer(ctx, refClient)

	switch verb {
	case "list":
		return list(stdout, stderr, source, symbol)
	case "describe":
		return describe(stdout, stderr, source, symbol)
	}

	var in io.Reader = strings.NewReader(o.data)
	if o.data == "@" {
		in = stdin
	}
	parser, formatter, err := grpcurl.RequestParserAndFormatter(grpcurl.FormatJSON, source, in, grpcurl.FormatOptions{EmitJSONDefaultFields: o.emitDefaults})
	if err != nil {
		return failure(stderr, err, "Failed to construct the request parser and formatter")
	}
	h := &grpcurl.DefaultEventHandler{Out: stdout, Formatter: formatter}
	if o.verbose {
		h.VerbosityLevel = 1
	}
	if err := grpcurl.InvokeRPC(ctx, source, cc, symbol, o.headers, h, parser.Next); err != nil {
		return failure(stderr, err, "Error invoking method %q", symbol)
	}
	if o.verbose {
		fmt.Fprintf(stdout, "Sent %s and received %s\n", plural(parser.NumRequests(), "request"), plural(h.NumResponses, "response"))
	}
	if h.Status.Code() != codes.OK {
		grpcurl.PrintStatus(stderr, h.Status, formatter)
		return statusCodeOffset + int(h.Status.Code())
	}
	return exitOK
}

// dial opens the muxrpc session to address that o asks for.
func dial(ctx context.Context, address string, o *options) (*rpc.Peer, error) {
	if o.connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.connectTimeout)
		defer cancel()
	}
	var opts []rpc.DialOption
	if o.useTLS {
		cfg, err := grpcurl.ClientTLSConfig(o.insecure, o.cacert, o.cert, o.key)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = o.serverName
		opts = append(opts, rpc.WithTLS(cfg))
	}
	return rpc.Dial(ctx, address, opts...)
}

// list prints the services of source or, if service is not empty, the
// methods of that service, one a line.
func list(stdout, stderr io.Writer, source grpcurl.DescriptorSource, service string) int {
	if service == "" {
		svcs, err := grpcurl.ListServices(source)
		if err != nil {
			return failure(stderr, err, "Failed to list services")
		}
		if len(svcs) == 0 {
			fmt.Fprintln(stdout, "(No services)")
		}
		for _, s := range svcs {
			fmt.Fprintln(stdout, s)
		}
		return exitOK
	}
	methods, err := grpcurl.ListMethods(source, service)
	if err != nil {
		return failure(stderr, err, "Failed to list methods for service %q", service)
	}
	if len(methods) == 0 {
		fmt.Fprintln(stdout, "(No methods)")
	}
	for _, m := range methods {
		fmt.Fprintln(stdout, m)
	}
	return exitOK
}

// describe prints the descriptor of symbol, or of every service of source
// if symbol is empty, as grpcurl does.
func describe(stdout, stderr io.Writer, source grpcurl.DescriptorSource, symbol string) int {
	symbols := []string{symbol}
	if symbol == "" {
		svcs, err := source.ListServices()
		if err != nil {
			return failure(stderr, err, "Failed to list services")
		}
		if len(svcs) == 0 {
			fmt.Fprintln(stdout, "Server returned an empty list of exposed services")
		}
		symbols = svcs
	}
	for _, s := range symbols {
		s = strings.TrimPrefix(s, ".")
		dsc, err := source.FindSymbol(s)
		if err != nil {
			return failure(stderr, err, "Failed to resolve symbol %q", s)
		}
		fqn := dsc.GetFullyQualifiedName()
		var kind string
		dsc, kind = describedAs(dsc)
		if kind == "" {
			return failure(stderr, fmt.Errorf("descriptor has unrecognized type %T", dsc), "Failed to describe symbol %q", s)
		}
		txt, err := grpcurl.GetDescriptorText(dsc, source)
		if err != nil {
			return failure(stderr, err, "Failed to describe symbol %q", s)
		}
		fmt.Fprintf(stdout, "%s is %s:\n%s\n", fqn, kind, txt)
	}
	return exitOK
}

// describedAs returns what describing dsc shows, and what kind of element
// it is ("a message", ...), empty for a kind grpcurl does not describe. A
// map's entry or a group's type is shown as the field it belongs to.
func describedAs(dsc desc.Descriptor) (desc.Descriptor, string) {
	switch d := dsc.(type) {
	case *desc.MessageDescriptor:
		if parent, ok := d.GetParent().(*desc.MessageDescriptor); ok {
			for _, f := range parent.GetFields() {
				if f.GetMessageType() != d {
					continue
				}
				if d.IsMapEntry() && f.IsMap() {
					return f, "the entry type for a map field"
				}
				if !d.IsMapEntry() && f.GetType() == descriptorpb.FieldDescriptorProto_TYPE_GROUP {
					return f, "the type of a group field"
				}
			}
		}
		return d, "a message"
	case *desc.FieldDescriptor:
		switch {
		case d.GetType() == descriptorpb.FieldDescriptorProto_TYPE_GROUP:
			return d, "a group field"
		case d.IsExtension():
			return d, "an extension"
		}
		return d, "a field"
	case *desc.OneOfDescriptor:
		return d, "a one-of"
	case *desc.EnumDescriptor:
		return d, "an enum"
	case *desc.EnumValueDescriptor:
		return d, "an enum value"
	case *desc.ServiceDescriptor:
		return d, "a service"
	case *desc.MethodDescriptor:
		return d, "a method"
	}
	return dsc, ""
}

// failure prints what failed and why, and returns the exit code of a
// failure.
func failure(stderr io.Writer, err error, format string, args ...any) int {
	fmt.Fprintf(stderr, format+": %v\n", append(args, err)...)
	return exitFailure
}

// usageError prints msg and a pointer to the usage, and returns the exit
// code of a usage error.
func usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "%s\nTry 'muxrpcurl -help' for more details.\n", msg)
	return exitUsage
}

// plural returns "1 request", "2 requests" and so on.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
