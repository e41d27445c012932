package codegen

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// The language features and editions the generator supports, reported to
// protoc (or buf) in every response. They match protoc-gen-go's, which
// runs beside it.
const (
	SupportedFeatures = uint64(pluginpb.CodeGeneratorResponse_FEATURE_PROTO3_OPTIONAL |
		pluginpb.CodeGeneratorResponse_FEATURE_SUPPORTS_EDITIONS)
	SupportedEditionsMinimum = descriptorpb.Edition_EDITION_PROTO2
	SupportedEditionsMaximum = descriptorpb.Edition_EDITION_2024
)

// Options returns the protogen options of the plugin. protogen handles
// paths=, module= and M mappings; the generator's own parameter is
// grpc_coexist=true|false (see the package doc), which Generate reads from
// the request. Any other parameter, or another value of grpc_coexist, is
// an error.
func Options() protogen.Options {
	return protogen.Options{
		ParamFunc: new(parameters).set,
	}
}

// parameters are the generator's own plugin parameters.
type parameters struct {
	// grpcCoexist, from grpc_coexist=true, prefixes every package-level
	// identifier with Mux right before the service's name, so that the
	// code sits beside protoc-gen-go-grpc's in one Go package.
	grpcCoexist bool
}

// set parses the parameter name=value; it is the ParamFunc of Options,
// which protogen calls for each parameter that is not its own.
func (p *parameters) set(name, value string) error {
	switch name {
	case "grpc_coexist":
		switch value {
		case "true":
			p.grpcCoexist = true
		case "false":
			p.grpcCoexist = false
		default:
			return fmt.Errorf("bad value %q for parameter grpc_coexist (protoc-gen-muxrpc takes grpc_coexist=true or grpc_coexist=false)", value)
		}
		return nil
	}
	return fmt.Errorf("unknown parameter %q (protoc-gen-muxrpc takes grpc_coexist=true|false, paths=, module= and M mappings)", name)
}

// parseParameters reads the generator's own parameters from a request's
// parameter string, split as protogen splits it; protogen's parameters
// are left to protogen.
func parseParameters(parameter string) (parameters, error) {
	var p parameters
	for _, param := range strings.Split(parameter, ",") {
		name, value, _ := strings.Cut(param, "=")
		if name == "grpc_coexist" {
			if err := p.set(name, value); err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// prefix is the prefix of the package-level identifiers of a service.
func (p parameters) prefix() string {
	if p.grpcCoexist {
		return "Mux"
	}
	return ""
}

// Run is the plugin's main function: it reads a CodeGeneratorRequest from
// r and writes the CodeGeneratorResponse to w. Whatever is wrong with the
// request, including bytes that are not a request at all, is reported in
// the response's error field, which protoc prints; Run returns an error
// only when it cannot read r or write w.
func Run(r io.Reader, w io.Writer) error {
	in, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading the CodeGeneratorRequest: %w", err)
	}
	out, err := proto.Marshal(Respond(in))
	if err != nil {
		return fmt.Errorf("encoding the CodeGeneratorResponse: %w", err)
	}
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("writing the CodeGeneratorResponse: %w", err)
	}
	return nil
}

// Respond decodes a CodeGeneratorRequest and answers it, as Process does.
func Respond(request []byte) *pluginpb.CodeGeneratorResponse {
	req := new(pluginpb.CodeGeneratorRequest)
	if err := proto.Unmarshal(request, req); err != nil {
		return errorResponse(fmt.Errorf("protoc-gen-muxrpc: the input is not a CodeGeneratorRequest (this program is run by protoc or buf): %v", err))
	}
	return Process(req)
}

// Process answers a CodeGeneratorRequest: the generated files, or an
// error. It never panics: a panic in the generator, which would be a bug,
// becomes an error in the response.
func Process(req *pluginpb.CodeGeneratorRequest) (resp *pluginpb.CodeGeneratorResponse) {
	defer func() {
		if r := recover(); r != nil {
			resp = errorResponse(fmt.Errorf("protoc-gen-muxrpc: internal error, please report it: %v\n%s", r, debug.Stack()))
		}
	}()
	gen, err := Options().New(req)
	if err != nil {
		return errorResponse(err)
	}
	if err := Generate(gen); err != nil {
		gen.Error(err)
	}
	resp = gen.Response()
	// protogen leaves these out of some of its error responses.
	resp.SupportedFeatures = proto.Uint64(SupportedFeatures)
	resp.MinimumEdition = proto.Int32(int32(SupportedEditionsMinimum))
	resp.MaximumEdition = proto.Int32(int32(SupportedEditionsMaximum))
	return resp
}

func errorResponse(err error) *pluginpb.CodeGeneratorResponse {
	return &pluginpb.CodeGeneratorResponse{
		Error:             proto.String(err.Error()),
		SupportedFeatures: proto.Uint64(SupportedFeatures),
		MinimumEdition:    proto.Int32(int32(SupportedEditionsMinimum)),
		MaximumEdition:    proto.Int32(int32(SupportedEditionsMaximum)),
	}
}
