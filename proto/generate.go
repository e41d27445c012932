// Package proto holds muxrpc's own .proto files, each with its generated
// Go code beside it (protoc-gen-go's messages and protoc-gen-muxrpc's
// services):
//
//   - echo/v1: the muxrpc.echo.v1 test and example services, Echo (one
//     method of each kind) and Notifier (a callback service a client
//     serves).
//   - helloworld/v1: muxrpc.helloworld.v1's Greeter, for
//     examples/helloworld.
//   - routeguide/v1: muxrpc.routeguide.v1's RouteGuide, one method of
//     each kind over points on a map, for examples/routeguide.
//
// Regenerate everything with go generate ./proto (or proto/generate.sh),
// which needs protoc; CI checks that the committed code is what the
// current generator produces.
package proto

//go:generate bash ./generate.sh
