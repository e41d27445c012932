// Package asprocesses holds the test that runs each example as its two
// halves in separate processes, the way the README tells a reader to
// (-listen in one terminal, -connect in another), and stops the server
// with SIGTERM: the client's output, and a graceful stop with exit
// status 0, are checked. The package has no API.
package asprocesses
