#!/usr/bin/env bash
# Runs every test of every Go module of the repository (each directory
# with a go.mod, outside testdata: the root first, then bench/, examples/kcp/,
# rpc/integration/, rpc/etcddirectory/ and rpc/cmd/muxrpcurl/) under the
# race detector, each package bounded in time, and then the one test that
# needs it off. Fails if any module's tests fail; arguments go to every go
# test.
set -euo pipefail
cd "$(dirname "$0")"
# Progress: each package's start and end, and a failing package's output
# whole (internal/testprogress reads go test's -json events).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/testprogress" ./internal/testprogress
failed=()
for mod in ./go.mod $(find . -mindepth 2 -name go.mod -not -path '*/testdata/*' | sort); do
	dir=$(dirname "$mod")
	echo "== go test $dir: compiling, then each package as it starts and ends"
	(cd "$dir" && go test -race -timeout 10m -count=1 -json ./... "$@" 2>&1 | "$tmp/testprogress") || failed+=("$dir")
done
# The race detector inflates what memory costs, so the bound on what an
# idle session costs the server is asserted only without it.
echo "== go test -run TestIdleSessionCost ./rpc (without -race)"
go test -timeout 2m -count=1 -run '^TestIdleSessionCost$' ./rpc "$@" || failed+=("./rpc (TestIdleSessionCost without -race)")
if [ "${#failed[@]}" -gt 0 ]; then
	echo "tests failed in: ${failed[*]}"
	exit 1
fi
