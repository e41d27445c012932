module github.com/muxrpc/muxrpc/rpc/integration

go 1.26.0

replace github.com/muxrpc/muxrpc => ../../
