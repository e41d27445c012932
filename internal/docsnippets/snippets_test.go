package docsnippets

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// goPath matches a Go file named in the README's prose, in backticks or
// as a link's target: the file the next snippet is taken from.
var goPath = regexp.MustCompile("[`(]((?:[\\w.-]+/)*[\\w.-]+\\.go)[`)]")

// TestSnippetsComeFromTestedCode: every ```go block of README.md is taken
// from the Go file named last in the prose before it (since the previous
// block), and every line of it, but a line of "...", is a line of that
// file, leading and trailing space aside.
func TestSnippetsComeFromTestedCode(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	snippets := 0
	var prose strings.Builder
	var block []string
	inBlock := false
	sc := bufio.NewScanner(strings.NewReader(string(readme)))
	line := 0
	start := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		switch {
		case !inBlock && strings.HasPrefix(text, "```go"):
			inBlock, block, start = true, nil, line
		case inBlock && strings.HasPrefix(text, "```"):
			inBlock = false
			snippets++
			checkSnippet(t, root, start, prose.String(), block)
			prose.Reset()
		case inBlock:
			block = append(block, text)
		default:
			prose.WriteString(text + "\n")
		}
	}
	if snippets == 0 {
		t.Fatal("README.md has no Go snippet")
	}
}

// checkSnippet checks the snippet at README.md's line start, whose lines
// are block, against the file prose names last.
func checkSnippet(t *testing.T, root string, start int, prose string, block []string) {
	t.Helper()
	named := goPath.FindAllStringSubmatch(prose, -1)
	if len(named) == 0 {
		t.Errorf("README.md:%d: the snippet names no file it is taken from", start)
		return
	}
	path := named[len(named)-1][1]
	src, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Errorf("README.md:%d: the snippet's file: %v", start, err)
		return
	}
	have := make(map[string]bool)
	for l := range strings.Lines(string(src)) {
		have[strings.TrimSpace(l)] = true
	}
	for i, l := range block {
		l = strings.TrimSpace(l)
		if l == "" || l == "..." {
			continue
		}
		if !have[l] {
			t.Errorf("README.md:%d: not a line of %s: %s", start+1+i, path, l)
		}
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
