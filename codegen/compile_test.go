package codegen

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gengo "google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/pluginpb"
)

// TestGoldenCompiles builds and vets the generated code of every golden
// input, with protoc-gen-go's messages (generated in process too), in a
// temporary module that uses this repository's rpc package.
func TestGoldenCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module with the go command; skipped with -short")
	}
	req := compileRequest(t, "module="+testModule, goldenProtos...)
	files := generateMessages(t, req)
	// The services, with ours.
	services := 0
	for name, content := range generate(t, req) {
		files[name] = content
		services++
	}
	if services != len(goldenProtos)-1 {
		t.Fatalf("%d service files, want %d", services, len(goldenProtos)-1)
	}
	dir := writeModule(t, files)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	runGo(t, ctx, dir, "vet", "./...")
}

// testModule is the module path of the temporary modules of the tests
// that build generated code, the prefix of the test files' go_package.
const testModule = "example.com/codegentest"

// generateMessages runs protoc-gen-go's generator, in process, on every
// file of req but the well-known types, and returns its files by name.
func generateMessages(t testing.TB, req *pluginpb.CodeGeneratorRequest) map[string]string {
	t.Helper()
	msgReq := proto.Clone(req).(*pluginpb.CodeGeneratorRequest)
	msgReq.FileToGenerate = nil
	for _, f := range msgReq.ProtoFile {
		if !strings.HasPrefix(f.GetName(), "google/protobuf/") {
			msgReq.FileToGenerate = append(msgReq.FileToGenerate, f.GetName())
		}
	}
	gen, err := protogen.Options{}.New(msgReq)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range gen.Files {
		if f.Generate {
			gengo.GenerateFile(gen, f)
		}
	}
	resp := gen.Response()
	if resp.Error != nil {
		t.Fatal(resp.GetError())
	}
	files := map[string]string{}
	for _, f := range resp.File {
		files[f.GetName()] = f.GetContent()
	}
	return files
}

// writeModule writes files, by slash-separated name, into a temporary
// module testModule with this repository's requirements (and go.sum), so
// that a build needs nothing beyond the module cache, and with this
// repository in place of github.com/muxrpc/muxrpc. It returns the
// module's directory.
func writeModule(t testing.TB, files map[string]string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mod := regexp.MustCompile(`(?m)^module .*$`).ReplaceAllString(string(gomod), "module "+testModule)
	mod += "\nrequire github.com/muxrpc/muxrpc v0.0.0\n\nreplace github.com/muxrpc/muxrpc => " + root + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runGo runs the go command with args in the module dir, offline, and
// fails the test if it fails.
func runGo(t testing.TB, ctx context.Context, dir string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOPROXY=off", "GOTOOLCHAIN=local")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s of the generated code: %v\n%s", strings.Join(args, " "), err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Logf("go %s: %s", strings.Join(args, " "), s)
	}
}
