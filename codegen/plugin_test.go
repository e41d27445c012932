package codegen

import (
	"bytes"
	"context"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// TestParameters checks that protogen's standard parameters reach the
// generated file's name and package.
func TestParameters(t *testing.T) {
	for _, tc := range []struct {
		param, file, pkg string
	}{
		{"", "example.com/codegentest/proto3/proto3_muxrpc.pb.go", "package proto3pb"},
		{"paths=import", "example.com/codegentest/proto3/proto3_muxrpc.pb.go", "package proto3pb"},
		{"paths=source_relative", "proto3_muxrpc.pb.go", "package proto3pb"},
		{"module=example.com/codegentest", "proto3/proto3_muxrpc.pb.go", "package proto3pb"},
		{"Mproto3.proto=example.com/other/x;xpb", "example.com/other/x/proto3_muxrpc.pb.go", "package xpb"},
		{"Mproto3.proto=example.com/other/x,paths=source_relative", "proto3_muxrpc.pb.go", "package proto3pb"},
	} {
		got := generate(t, compileRequest(t, tc.param, "proto3.proto"))
		content, ok := got[tc.file]
		if !ok || len(got) != 1 {
			names := []string{}
			for n := range got {
				names = append(names, n)
			}
			t.Errorf("%q: files %v, want %s", tc.param, names, tc.file)
			continue
		}
		if !strings.Contains(content, "\n"+tc.pkg+"\n") {
			t.Errorf("%q: no %q in the output", tc.param, tc.pkg)
		}
	}
}

// TestBadRequests checks that what is wrong with a request is answered
// with an error in the response, and not by a panic.
func TestBadRequests(t *testing.T) {
	valid := func() *pluginpb.CodeGeneratorRequest {
		return compileRequest(t, "", "proto3.proto", "editions.proto")
	}
	file := func(req *pluginpb.CodeGeneratorRequest, name string) *descriptorpb.FileDescriptorProto {
		for _, f := range req.ProtoFile {
			if f.GetName() == name {
				return f
			}
		}
		t.Fatalf("no %s in the request", name)
		return nil
	}
	for _, tc := range []struct {
		name   string
		modify func(*pluginpb.CodeGeneratorRequest)
		want   string
	}{
		{"unknown parameter", func(r *pluginpb.CodeGeneratorRequest) {
			r.Parameter = proto.String("plugins=grpc")
		}, `unknown parameter "plugins" (protoc-gen-muxrpc takes grpc_coexist=true|false, paths=`},
		{"grpc_coexist neither true nor false", func(r *pluginpb.CodeGeneratorRequest) {
			r.Parameter = proto.String("paths=source_relative,grpc_coexist=maybe")
		}, `bad value "maybe" for parameter grpc_coexist`},
		{"grpc_coexist without a value", func(r *pluginpb.CodeGeneratorRequest) {
			r.Parameter = proto.String("grpc_coexist")
		}, `bad value "" for parameter grpc_coexist`},
		{"grpc_coexist in capitals", func(r *pluginpb.CodeGeneratorRequest) {
			r.Parameter = proto.String("grpc_coexist=TRUE")
		}, `bad value "TRUE" for parameter grpc_coexist`},
		{"bad paths", func(r *pluginpb.CodeGeneratorRequest) {
			r.Parameter = proto.String("paths=nowhere")
		}, `unknown path type "nowhere"`},
		{"module with source_relative", func(r *pluginpb.CodeGeneratorRequest) {
			r.Parameter = proto.String("module=example.com,paths=source_relative")
		}, "cannot use module= with paths=source_relative"},
		{"module not a prefix", func(r *pluginpb.CodeGeneratorRequest) {
			r.Parameter = proto.String("module=example.org/elsewhere")
		}, `does not match prefix "example.org/elsewhere"`},
		{"file to generate missing", func(r *pluginpb.CodeGeneratorRequest) {
			r.FileToGenerate = append(r.FileToGenerate, "missing.proto")
		}, "missing.proto"},
		{"no go_package", func(r *pluginpb.CodeGeneratorRequest) {
			file(r, "proto3.proto").Options.GoPackage = nil
		}, "unable to determine Go import path"},
		{"unknown message", func(r *pluginpb.CodeGeneratorRequest) {
			file(r, "proto3.proto").Service[0].Method[0].InputType = proto.String(".muxrpc.test.proto3.Nope")
		}, "Nope"},
		{"dependency missing", func(r *pluginpb.CodeGeneratorRequest) {
			file(r, "proto3.proto").Dependency = []string{"gone.proto"}
		}, "gone.proto"},
		{"edition too new for protogen", func(r *pluginpb.CodeGeneratorRequest) {
			file(r, "editions.proto").Edition = descriptorpb.Edition_EDITION_99999_TEST_ONLY.Enum()
		}, "edition"},
		{"edition not supported", func(r *pluginpb.CodeGeneratorRequest) {
			file(r, "editions.proto").Edition = descriptorpb.Edition_EDITION_UNSTABLE.Enum()
		}, "edition UNSTABLE is not supported by protoc-gen-muxrpc (it supports up to 2024)"},
		{"syntax unknown", func(r *pluginpb.CodeGeneratorRequest) {
			file(r, "proto3.proto").Syntax = proto.String("proto4")
		}, "proto4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := valid()
			tc.modify(req)
			resp := Process(req)
			if resp.Error == nil {
				t.Fatalf("no error; files %d", len(resp.File))
			}
			msg := resp.GetError()
			if strings.Contains(msg, "internal error") {
				t.Fatalf("the generator panicked: %s", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q does not mention %q", msg, tc.want)
			}
			if len(resp.File) != 0 {
				t.Errorf("%d files beside the error", len(resp.File))
			}
			checkFeatures(t, resp)
		})
	}
}

// TestEditionsSupported checks that the newest supported edition
// generates.
func TestEditionsSupported(t *testing.T) {
	req := compileRequest(t, "", "editions.proto")
	for _, f := range req.ProtoFile {
		if f.GetName() == "editions.proto" {
			f.Edition = SupportedEditionsMaximum.Enum()
		}
	}
	if got := generate(t, req); len(got) != 1 {
		t.Fatalf("%d files", len(got))
	}
}

// TestPluginBinary feeds the built plugin input that is not a request, and
// checks that it answers with an error in the response.
func TestPluginBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "protoc-gen-muxrpc")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/protoc-gen-muxrpc").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(t *testing.T, stdin []byte) *pluginpb.CodeGeneratorResponse {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("plugin: %v\n%s", err, stderr.Bytes())
		}
		resp := new(pluginpb.CodeGeneratorResponse)
		if err := proto.Unmarshal(out, resp); err != nil {
			t.Fatalf("the plugin's output is not a response: %v", err)
		}
		return resp
	}
	good, err := proto.Marshal(compileRequest(t, "paths=source_relative", "proto3.proto"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("request", func(t *testing.T) {
		resp := run(t, good)
		if resp.Error != nil || len(resp.File) != 1 || resp.File[0].GetName() != "proto3_muxrpc.pb.go" {
			t.Fatalf("error %q, %d files", resp.GetError(), len(resp.File))
		}
	})
	for name, in := range map[string][]byte{
		"garbage":   []byte("this is not a protobuf message\xff\xff\xff"),
		"truncated": good[:len(good)/2],
	} {
		t.Run(name, func(t *testing.T) {
			resp := run(t, in)
			if !strings.Contains(resp.GetError(), "not a CodeGeneratorRequest") {
				t.Fatalf("error %q", resp.GetError())
			}
			checkFeatures(t, resp)
		})
	}
	t.Run("empty", func(t *testing.T) { // an empty request asks for nothing
		resp := run(t, nil)
		if resp.Error != nil || len(resp.File) != 0 {
			t.Fatalf("error %q, %d files", resp.GetError(), len(resp.File))
		}
	})
	t.Run("arguments", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, bin, "--version").Output()
		if err != nil || !strings.HasPrefix(string(out), "protoc-gen-muxrpc ") {
			t.Fatalf("--version: %q, %v", out, err)
		}
		if err := exec.CommandContext(ctx, bin, "foo.proto").Run(); err == nil {
			t.Fatal("an argument was accepted")
		}
	})
}

// FuzzRespond checks that no input makes the generator panic (Process
// would turn a panic into an "internal error" response).
func FuzzRespond(f *testing.F) {
	for _, files := range [][]string{{"proto3.proto"}, {"editions.proto"}, {"clash.proto"}, {"wkt.proto"}} {
		b, err := proto.Marshal(compileRequest(f, "", files...))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x0a\x03a.b"))
	f.Fuzz(func(t *testing.T, in []byte) {
		resp := Respond(in)
		if strings.Contains(resp.GetError(), "internal error") {
			t.Fatal(resp.GetError())
		}
	})
}

// TestRespondMutations feeds the generator valid requests with random
// bytes changed: whatever they decode to, the answer is never a panic.
func TestRespondMutations(t *testing.T) {
	var seeds [][]byte
	for _, files := range [][]string{{"proto3.proto"}, {"editions.proto"}, {"clash.proto"}, {"wkt.proto"}} {
		b, err := proto.Marshal(compileRequest(t, "", files...))
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	r := rand.New(rand.NewSource(1))
	deadline := time.Now().Add(5 * time.Second)
	n, generated := 0, 0
	for ; n < 3000 && time.Now().Before(deadline); n++ {
		in := bytes.Clone(seeds[r.Intn(len(seeds))])
		for k := r.Intn(4) + 1; k > 0; k-- {
			in[r.Intn(len(in))] = byte(r.Intn(256))
		}
		resp := Respond(in)
		if strings.Contains(resp.GetError(), "internal error") {
			t.Fatalf("input %x: %s", in, resp.GetError())
		}
		if resp.Error == nil && len(resp.File) > 0 {
			generated++
		}
	}
	t.Logf("%d mutated requests, %d generated code", n, generated)
}
