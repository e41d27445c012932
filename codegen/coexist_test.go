package codegen

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/pluginpb"
)

// grpcPlugin is the protoc-gen-go-grpc that TestGRPCCoexistBesideGRPC
// generates with, the version whose names reserveProtocGenGoGRPC knows.
const (
	grpcPluginPackage = "google.golang.org/grpc/cmd/protoc-gen-go-grpc"
	grpcPluginVersion = "1.6.2"
)

// TestGRPCCoexistFalse checks that grpc_coexist=false generates exactly
// what no parameter does.
func TestGRPCCoexistFalse(t *testing.T) {
	want := generate(t, compileRequest(t, "paths=source_relative", goldenProtos...))
	got := generate(t, compileRequest(t, "paths=source_relative,grpc_coexist=false", goldenProtos...))
	if len(got) != len(want) {
		t.Fatalf("%d files, want %d", len(got), len(want))
	}
	for name, content := range want {
		if d := firstDiff(content, got[name]); d != "" {
			t.Errorf("%s: %s", name, d)
		}
	}
	// The last grpc_coexist wins.
	got = generate(t, compileRequest(t, "grpc_coexist=true,paths=source_relative,grpc_coexist=false", "proto3.proto"))
	if d := firstDiff(want["proto3_muxrpc.pb.go"], got["proto3_muxrpc.pb.go"]); d != "" {
		t.Errorf("grpc_coexist=true then false: %s", d)
	}
}

// TestGenerateReadsGRPCCoexist checks that Generate reads grpc_coexist
// from the request itself, whatever options made the protogen.Plugin.
func TestGenerateReadsGRPCCoexist(t *testing.T) {
	for _, tc := range []struct {
		parameter, want, err string
	}{
		{"grpc_coexist=true", "func NewMuxEchoClient(", ""},
		{"grpc_coexist=false", "func NewEchoClient(", ""},
		{"grpc_coexist=maybe", "", `bad value "maybe" for parameter grpc_coexist`},
	} {
		req := compileRequest(t, tc.parameter, "proto3.proto")
		gen, err := protogen.Options{ParamFunc: func(name, value string) error { return nil }}.New(req)
		if err != nil {
			t.Fatal(err)
		}
		err = Generate(gen)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.parameter, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.parameter, err)
		}
		resp := gen.Response()
		if resp.Error != nil || len(resp.File) != 1 || !strings.Contains(resp.File[0].GetContent(), tc.want) {
			t.Errorf("%s: error %q, %d files, want one with %q", tc.parameter, resp.GetError(), len(resp.File), tc.want)
		}
	}
}

// TestGRPCCoexistBesideGRPC generates protoc-gen-go's messages (in
// process), protoc-gen-go-grpc's code (the real plugin, built at
// grpcPluginVersion and fed the request on its standard input) and ours
// with grpc_coexist=true for the same .proto files into one Go package
// each, adds the tests in testdata/grpc_coexist_use, which use both
// plugins' clients (NewEchoClient beside NewMuxEchoClient), and builds,
// vets and runs them in a temporary module.
//
// Outside CI it is skipped if the plugin cannot be built (the go command
// needs the module proxy or the module cache for it); with CI=true it
// fails.
func TestGRPCCoexistBesideGRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds protoc-gen-go-grpc and a module with the go command; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	bin := buildGRPCPlugin(t, ctx)

	req := compileRequest(t, "module="+testModule+",grpc_coexist=true", coexistProtos...)
	files := generateMessages(t, req)
	add := func(from string, generated map[string]string) {
		for name, content := range generated {
			if _, ok := files[name]; ok {
				t.Fatalf("%s: %s twice", from, name)
			}
			files[name] = content
		}
	}
	add("protoc-gen-muxrpc", generate(t, req))
	grpcReq := proto.Clone(req).(*pluginpb.CodeGeneratorRequest)
	grpcReq.Parameter = proto.String("module=" + testModule)
	add("protoc-gen-go-grpc", runGRPCPlugin(t, ctx, bin, grpcReq))
	for _, p := range coexistProtos {
		pkg := strings.TrimSuffix(p, ".proto")
		for _, suffix := range []string{".pb.go", "_grpc.pb.go", "_muxrpc.pb.go"} {
			if _, ok := files[pkg+"/"+pkg+suffix]; !ok {
				t.Fatalf("no %s/%s%s among the generated files", pkg, pkg, suffix)
			}
		}
		use, err := os.ReadFile(filepath.Join("testdata", "grpc_coexist_use", pkg, "both_test.go"))
		if err != nil {
			t.Fatal(err)
		}
		files[pkg+"/both_test.go"] = string(use)
	}

	dir := writeModule(t, files)
	runGo(t, ctx, dir, "build", "./...")
	runGo(t, ctx, dir, "vet", "./...")
	runGo(t, ctx, dir, "test", "-count=1", "./...")
}

// buildGRPCPlugin installs protoc-gen-go-grpc at grpcPluginVersion into a
// temporary directory and returns its path. If it cannot, the test fails
// with CI=true and is skipped otherwise.
func buildGRPCPlugin(t *testing.T, ctx context.Context) string {
	t.Helper()
	gobin := t.TempDir()
	cmd := exec.CommandContext(ctx, "go", "install", grpcPluginPackage+"@v"+grpcPluginVersion)
	cmd.Dir = t.TempDir() // outside this module: the plugin is a module of its own
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot build %s@v%s: %v\n%s", grpcPluginPackage, grpcPluginVersion, err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg + "(skipped outside CI; with CI=true the test fails)")
	}
	bin := filepath.Join(gobin, "protoc-gen-go-grpc")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	version, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil || strings.TrimSpace(string(version)) != "protoc-gen-go-grpc "+grpcPluginVersion {
		t.Fatalf("%s --version: %q, %v", bin, version, err)
	}
	return bin
}

// runGRPCPlugin runs the plugin bin on req, as protoc would, and returns
// the files of its response by name.
func runGRPCPlugin(t *testing.T, ctx context.Context, bin string, req *pluginpb.CodeGeneratorRequest) map[string]string {
	t.Helper()
	in, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, stderr.Bytes())
	}
	resp := new(pluginpb.CodeGeneratorResponse)
	if err := proto.Unmarshal(out, resp); err != nil {
		t.Fatalf("the output of %s is not a response: %v", bin, err)
	}
	if resp.Error != nil {
		t.Fatalf("%s: %s", bin, resp.GetError())
	}
	files := map[string]string{}
	for _, f := range resp.File {
		files[f.GetName()] = f.GetContent()
	}
	return files
}
