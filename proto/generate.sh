#!/usr/bin/env bash
# Regenerates the Go code of every .proto file under proto/: protoc-gen-go's
# messages and protoc-gen-muxrpc's services, beside each .proto file.
#
#   proto/generate.sh [OUT_DIR]
#
# OUT_DIR defaults to proto/ itself; the freshness test writes elsewhere and
# compares. Needs protoc (apt-get install -y protobuf-compiler) and the go
# command: protoc-gen-go is the version in go.mod (the one on PATH if it is
# that version, else installed into a temporary GOBIN), and protoc-gen-muxrpc
# is built from this repository's source.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v protoc >/dev/null; then
	echo "generate.sh: protoc not found; install it (apt-get install -y protobuf-compiler)" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

version=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
if command -v protoc-gen-go >/dev/null && [ "$(protoc-gen-go --version 2>/dev/null)" = "protoc-gen-go $version" ]; then
	gen_go=$(command -v protoc-gen-go)
else
	GOBIN="$tmp/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$version"
	gen_go="$tmp/bin/protoc-gen-go"
fi
go build -o "$tmp/bin/protoc-gen-muxrpc" ../codegen/cmd/protoc-gen-muxrpc

mapfile -t files < <(find . -name '*.proto' | sed 's#^\./##' | LC_ALL=C sort)
mkdir -p "$tmp/out"
protoc -I . \
	--plugin=protoc-gen-go="$gen_go" \
	--plugin=protoc-gen-muxrpc="$tmp/bin/protoc-gen-muxrpc" \
	--go_out="$tmp/out" --go_opt=paths=source_relative \
	--muxrpc_out="$tmp/out" --muxrpc_opt=paths=source_relative \
	"${files[@]}"

out=${1:-.}
mkdir -p "$out"
if [ "$out" = . ]; then
	# Generated files whose .proto is gone go too.
	find . -name '*.pb.go' -delete
fi
cp -R "$tmp/out/." "$out/"
