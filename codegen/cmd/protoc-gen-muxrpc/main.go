// Command protoc-gen-muxrpc is the protoc (and buf) plugin that generates
// muxrpc clients, server interfaces and service descriptors from .proto
// files, beside protoc-gen-go's messages:
//
//	go install github.com/muxrpc/muxrpc/codegen/cmd/protoc-gen-muxrpc@latest
//	protoc --go_out=. --go_opt=paths=source_relative \
//		--muxrpc_out=. --muxrpc_opt=paths=source_relative foo.proto
//
// It writes foo_muxrpc.pb.go for each foo.proto that declares services.
// With --muxrpc_opt=grpc_coexist=true its names take the prefix Mux
// (MuxFooClient, NewMuxFooClient, ...), so that it sits beside
// protoc-gen-go-grpc's foo_grpc.pb.go in one Go package:
//
//	protoc --go_out=. --go-grpc_out=. --muxrpc_out=. --muxrpc_opt=grpc_coexist=true foo.proto
//
// The generated code is described in package codegen.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/muxrpc/muxrpc/codegen"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		version := "(devel)"
		if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
			version = info.Main.Version
		}
		fmt.Println("protoc-gen-muxrpc", version)
		return
	}
	if len(os.Args) > 1 {
		fmt.Fprintf(os.Stderr, "protoc-gen-muxrpc: unknown argument %q: this program is run by protoc or buf (see --version)\n", os.Args[1])
		os.Exit(2)
	}
	if err := codegen.Run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "protoc-gen-muxrpc:", err)
		os.Exit(1)
	}
}
