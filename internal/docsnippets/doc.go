// Package docsnippets keeps the Go snippets of the repository's README.md
// true to the code: its test checks that every line of each snippet is a
// line of the compiled and tested file the README names before it, so a
// snippet cannot drift from code that runs. The package has no API.
package docsnippets
