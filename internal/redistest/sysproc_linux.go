package redistest

import "syscall"

// sysProcAttr puts redis-server in its own process group (a Ctrl-C to the
// test is not delivered to it) and has the kernel kill it if the test
// process dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
