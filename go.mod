module github.com/muxrpc/muxrpc

go 1.26.8

require (
	github.com/xtaci/smux v1.5.56
	go.uber.org/goleak v1.3.0
)
