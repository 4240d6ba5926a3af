//go:build !unix

package wsapi

import (
	"errors"
	"net"
	"syscall"
)

// nonBlockingRaw returns nil: without write(2) on a non-blocking socket
// (Windows, Plan 9, wasm), the write pool hands every connection to a
// flusher goroutine, which writes with blocking, deadline-bounded writes.
// Same frames, same order; one goroutine per writing connection.
func nonBlockingRaw(net.Conn) syscall.RawConn { return nil }

// writeNonBlocking is never called without a raw connection.
func writeNonBlocking(syscall.RawConn, []byte) ([]byte, error) {
	return nil, errors.New("non-blocking writes are not supported on this platform")
}
