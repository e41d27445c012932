module github.com/muxrpc/muxrpc/rpc/integration

go 1.26.0

replace github.com/muxrpc/muxrpc => ../../

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

require (
	github.com/miekg/dns v1.1.73
	github.com/muxrpc/muxrpc v0.0.0
	go.uber.org/goleak v1.3.0
	google.golang.org/grpc v1.85.0
)
