// Command gen writes health_muxrpc.pb.go, package healthv1's generated
// code, from the descriptor of grpc/health/v1/health.proto that
// google.golang.org/grpc/health/grpc_health_v1 embeds. It runs this
// repository's protoc-gen-muxrpc generator in process, so it needs no
// protoc; go generate ./rpc/health/... runs it in the healthv1 directory:
//
//	gen [-o DIR]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/muxrpc/muxrpc/codegen"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// goPackage is where the generated code goes: package healthv1, whose
// aliases of grpc_health_v1's messages the code names as local types.
const goPackage = "github.com/muxrpc/muxrpc/rpc/health/healthv1"

func main() {
	dir := flag.String("o", ".", "the directory to write health_muxrpc.pb.go in")
	flag.Parse()
	name, content, err := generate()
	if err == nil {
		err = os.WriteFile(filepath.Join(*dir, name), content, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// generate returns the name and content of the one file the generator
// makes for health.proto.
func generate() (name string, content []byte, err error) {
	fd := protodesc.ToFileDescriptorProto(healthpb.File_grpc_health_v1_health_proto)
	if len(fd.GetDependency()) != 0 {
		return "", nil, fmt.Errorf("%s imports %v, which the request would need too", fd.GetName(), fd.GetDependency())
	}
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: []string{fd.GetName()},
		// The M mapping overrides the file's go_package (grpc_health_v1).
		Parameter: proto.String("paths=source_relative,M" + fd.GetName() + "=" + goPackage + ";" + path.Base(goPackage)),
		ProtoFile: []*descriptorpb.FileDescriptorProto{fd},
	}
	resp := codegen.Process(req)
	if resp.Error != nil {
		return "", nil, errors.New(resp.GetError())
	}
	if len(resp.File) != 1 {
		return "", nil, fmt.Errorf("the generator made %d files, want 1", len(resp.File))
	}
	f := resp.File[0]
	return path.Base(f.GetName()), []byte(f.GetContent()), nil
}
