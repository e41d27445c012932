#!/usr/bin/env bash
# Regenerates the Go code of proto/benchpb/bench.proto for the three
# frameworks the benchmark compares:
#
#   proto/benchpb:   protoc-gen-go's messages, protoc-gen-muxrpc's services
#                    (bench_muxrpc.pb.go) and protoc-gen-go-drpc's
#                    (bench_drpc.pb.go), one Go package;
#   proto/benchgrpc: protoc-gen-go-grpc's services (bench_grpc.pb.go), in a
#                    package of their own, because protoc-gen-go-grpc and
#                    protoc-gen-muxrpc generate the same names (BenchClient,
#                    RegisterBenchServer, ...). The go_package of the .proto
#                    is mapped to benchgrpc for that plugin alone, and
#                    benchgrpc/messages.go (not generated) aliases the
#                    messages it then refers to unqualified.
#
#   ./generate.sh [OUT_DIR]
#
# OUT_DIR defaults to proto/; the freshness test writes elsewhere and
# compares. Needs protoc (apt-get install -y protobuf-compiler) and the go
# command: the plugins are installed at fixed versions into a temporary
# GOBIN (protoc-gen-go at the main module's google.golang.org/protobuf
# version), and protoc-gen-muxrpc is built from this repository's source.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v protoc >/dev/null; then
	echo "generate.sh: protoc not found; install it (apt-get install -y protobuf-compiler)" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

protobuf=$(cd .. && go list -m -f '{{.Version}}' google.golang.org/protobuf)
GOBIN="$tmp/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$protobuf"
GOBIN="$tmp/bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GOBIN="$tmp/bin" go install storj.io/drpc/cmd/protoc-gen-go-drpc@v1.0.0
(cd .. && go build -o "$tmp/bin/protoc-gen-muxrpc" ./codegen/cmd/protoc-gen-muxrpc)

src=benchpb/bench.proto
grpc_package="M$src=github.com/muxrpc/muxrpc/bench/proto/benchgrpc;benchgrpc"
mkdir -p "$tmp/out"
protoc -I proto \
	--plugin=protoc-gen-go="$tmp/bin/protoc-gen-go" \
	--plugin=protoc-gen-muxrpc="$tmp/bin/protoc-gen-muxrpc" \
	--plugin=protoc-gen-go-drpc="$tmp/bin/protoc-gen-go-drpc" \
	--plugin=protoc-gen-go-grpc="$tmp/bin/protoc-gen-go-grpc" \
	--go_out="$tmp/out" --go_opt=paths=source_relative \
	--muxrpc_out="$tmp/out" --muxrpc_opt=paths=source_relative \
	--go-drpc_out="$tmp/out" --go-drpc_opt=paths=source_relative \
	--go-grpc_out="$tmp/out" --go-grpc_opt=module=github.com/muxrpc/muxrpc/bench/proto,"$grpc_package" \
	"proto/$src"

out=${1:-proto}
mkdir -p "$out"
if [ "$out" = proto ]; then
	# Generated files whose .proto is gone go too.
	find proto -name '*.pb.go' -delete
fi
cp -R "$tmp/out/." "$out/"
