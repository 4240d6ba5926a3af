//go:build linux

package cdc

import (
	"net"
	"syscall"
	"unsafe"
)

// socketPending returns the number of bytes waiting in c's receive queue;
// ok is false when that cannot be known (TLS, not a socket).
func socketPending(c net.Conn) (n int, ok bool) {
	sc, isSock := c.(syscall.Conn)
	if !isSock {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var errno syscall.Errno
	err = rc.Control(func(fd uintptr) {
		var v int32
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v)))
		n = int(v)
	})
	if err != nil || errno != 0 {
		return 0, false
	}
	return n, true
}
