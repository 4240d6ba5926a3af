// Package redisproc finds a redis-server binary and checks that a server
// answers, for the test helper (internal/redistest) and the benchmark,
// which both start throwaway servers. It does not import testing.
package redisproc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNotFound is returned by Find when there is no redis-server.
var ErrNotFound = errors.New("redis-server not found")

// Find returns redis-server from PATH, else /usr/bin, /usr/local/bin or
// /usr/sbin (where Debian puts it when PATH lacks the sbin directories).
func Find() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/bin", "/usr/local/bin", "/usr/sbin"} {
		p := filepath.Join(d, "redis-server")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", ErrNotFound
}

// Ping sends PING to addr and expects +PONG within timeout (a server
// still loading its data answers -LOADING, which is an error here).
func Ping(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
