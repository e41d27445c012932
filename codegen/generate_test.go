package codegen

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the generator's output")

// goldenProtos are the representative inputs of the golden tests, in
// testdata.
var goldenProtos = []string{
	"proto3.proto",    // every kind of method, comments, deprecations, optional
	"proto2.proto",    // proto2, go_package without a package name, extensions
	"editions.proto",  // edition 2023
	"wkt.proto",       // well-known types, another package's messages, nested messages
	"empty.proto",     // a service without methods
	"noservice.proto", // no services: no output
	"multi.proto",     // several services, a nested package
	"clash.proto",     // keywords and clashing names
	"samepkg/a.proto", // two files of one Go package, both with services
	"samepkg/b.proto",
}

// compileRequest compiles testdata/files in process, with protocompile,
// into the CodeGeneratorRequest protoc would send.
func compileRequest(t testing.TB, parameter string, files ...string) *pluginpb.CodeGeneratorRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{"testdata"}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := c.Compile(ctx, files...)
	if err != nil {
		t.Fatalf("compiling %v: %v", files, err)
	}
	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: files}
	if parameter != "" {
		req.Parameter = proto.String(parameter)
	}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) { // dependencies first, as protoc sends them
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		req.ProtoFile = append(req.ProtoFile, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range compiled {
		add(f)
	}
	return req
}

// generate runs the generator on req and returns its files by name.
func generate(t testing.TB, req *pluginpb.CodeGeneratorRequest) map[string]string {
	t.Helper()
	resp := Process(req)
	if resp.Error != nil {
		t.Fatalf("generator error: %s", resp.GetError())
	}
	checkFeatures(t, resp)
	out := map[string]string{}
	for _, f := range resp.File {
		out[f.GetName()] = f.GetContent()
	}
	return out
}

func checkFeatures(t testing.TB, resp *pluginpb.CodeGeneratorResponse) {
	t.Helper()
	if resp.GetSupportedFeatures() != SupportedFeatures ||
		resp.GetMinimumEdition() != int32(descriptorpb.Edition_EDITION_PROTO2) ||
		resp.GetMaximumEdition() != int32(descriptorpb.Edition_EDITION_2024) {
		t.Errorf("response features %d, editions %d to %d", resp.GetSupportedFeatures(), resp.GetMinimumEdition(), resp.GetMaximumEdition())
	}
}

// coexistProtos are the inputs of the golden test of grpc_coexist=true.
var coexistProtos = []string{
	"proto3.proto",  // every kind of method, with the Mux prefix
	"coexist.proto", // names that clash only with the prefix, or with protoc-gen-go-grpc's
}

func TestGolden(t *testing.T) {
	checkGolden(t, filepath.Join("testdata", "golden"), "paths=source_relative", goldenProtos)
}

// TestGoldenGRPCCoexist checks the output of grpc_coexist=true.
func TestGoldenGRPCCoexist(t *testing.T) {
	checkGolden(t, filepath.Join("testdata", "golden_grpc_coexist"), "paths=source_relative,grpc_coexist=true", coexistProtos)
}

// checkGolden compares the generator's output for protos, with parameter,
// with the files in dir; with -update, it rewrites dir.
func checkGolden(t *testing.T, dir, parameter string, protos []string) {
	t.Helper()
	req := compileRequest(t, parameter, protos...)
	got := generate(t, req)

	want := map[string]bool{}
	for _, p := range protos {
		if p != "noservice.proto" {
			want[strings.TrimSuffix(p, ".proto")+"_muxrpc.pb.go"] = true
		}
	}
	for name := range got {
		if !want[name] {
			t.Errorf("unexpected output file %s", name)
		}
	}
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	for name := range want {
		content, ok := got[name]
		if !ok {
			t.Errorf("no output file %s", name)
			continue
		}
		path := filepath.Join(dir, filepath.FromSlash(name))
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		golden, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
		}
		if d := firstDiff(string(golden), content); d != "" {
			t.Errorf("%s differs from the generator's output (go test -run TestGolden -update rewrites it):\n%s", path, d)
		}
	}
}

// firstDiff describes the first line where got differs from want.
func firstDiff(want, got string) string {
	if want == got {
		return ""
	}
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl || i >= len(w) || i >= len(g) {
			return fmt.Sprintf("line %d:\nwant: %q\n got: %q", i+1, wl, gl)
		}
	}
	return "files differ"
}

// TestGoldenIndependent checks that generating each file alone gives the
// same output as generating all of them together.
func TestGoldenIndependent(t *testing.T) {
	for _, tc := range []struct {
		parameter string
		protos    []string
	}{
		{"paths=source_relative", goldenProtos},
		{"paths=source_relative,grpc_coexist=true", coexistProtos},
	} {
		all := generate(t, compileRequest(t, tc.parameter, tc.protos...))
		for _, p := range tc.protos {
			one := generate(t, compileRequest(t, tc.parameter, p))
			for name, content := range one {
				if !bytes.Equal([]byte(content), []byte(all[name])) {
					t.Errorf("%q, %s: generated alone, %s differs:\n%s", tc.parameter, p, name, firstDiff(all[name], content))
				}
			}
		}
	}
}
