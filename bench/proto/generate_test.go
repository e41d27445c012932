package proto

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestGeneratedCodeIsFresh regenerates the benchmark's Go code with
// generate.sh into a temporary directory and compares it with the
// committed code. It needs protoc: under CI=true a missing protoc fails the
// test; elsewhere the test is skipped.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("protoc is not installed; CI must install it (apt-get install -y protobuf-compiler) to check the generated code")
		}
		t.Skip("protoc is not installed, so the generated code is not checked here (CI=true makes this a failure; apt-get install -y protobuf-compiler)")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("generate.sh needs bash")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../generate.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, b)
	}

	fresh, committed := generated(t, out), generated(t, ".")
	if strings.Join(fresh, " ") != strings.Join(committed, " ") {
		t.Fatalf("generated files %v, committed %v: run go generate ./proto", fresh, committed)
	}
	if len(fresh) == 0 {
		t.Fatal("nothing generated")
	}
	for _, name := range fresh {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if normalize(got) != normalize(want) {
			t.Errorf("%s is stale: run go generate ./proto", name)
		}
	}
}

// generated lists the *.pb.go files under dir, relative to it.
func generated(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".pb.go") {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// protocVersion matches the header lines of protoc-gen-go and
// protoc-gen-go-grpc that name the protoc that ran; another protoc version
// changes only them.
var protocVersion = regexp.MustCompile(`(?m)^// (\t|- )protoc +v.*$`)

func normalize(b []byte) string {
	return protocVersion.ReplaceAllString(string(b), "// protoc (version)")
}
