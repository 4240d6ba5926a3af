//go:build unix

package wsapi

import (
	"net"
	"os"
	"syscall"
)

// nonBlockingRaw returns the raw connection that writeNonBlocking writes
// to, or nil when nc has none (then every write goes through a blocking,
// deadline-bounded write on a flusher goroutine).
func nonBlockingRaw(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// writeNonBlocking writes b to the socket with write(2) calls that never
// wait (the runtime keeps sockets non-blocking) and returns what the socket
// did not take.
func writeNonBlocking(raw syscall.RawConn, b []byte) ([]byte, error) {
	var werr error
	err := raw.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := syscall.Write(int(fd), b)
			if n > 0 {
				b = b[n:]
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				if err != syscall.EAGAIN {
					werr = os.NewSyscallError("write", err)
				}
				break
			}
		}
		return true // never wait for the socket here
	})
	if err == nil {
		err = werr
	}
	return b, err
}
