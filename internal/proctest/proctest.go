// Package proctest runs the real pgrealtime binary as a child process for
// tests outside cmd/pgrealtime (the Go client's, for instance): built once
// per test binary, started on a fixed loopback port so that it can be killed
// and started again at the same address, and waited for by its /readyz.
//
// StartCluster (cluster.go) runs N such processes as one cluster (PROTOCOL
// section 8): same database, Redis and slot, their own --node-id and port,
// launched at once; it finds the leader from /readyz and reads
// GET /api/cluster.
package proctest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds ./cmd/pgrealtime once per test process and returns its path.
// The directory holding it is removed by Cleanup (call it from TestMain).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgrealtime-proctest-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "pgrealtime")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// go test puts its own GOROOT/bin first in PATH.
		out, err := exec.CommandContext(ctx, "go", "build", "-o", buildPath, "github.com/pgrealtime/pgrealtime/cmd/pgrealtime").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Cleanup removes the built binary.
func Cleanup() {
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
}

// Server is a pgrealtime process listening on Addr.
type Server struct {
	t    testing.TB
	path string // waited for: /readyz, or /healthz for StartUnready
	bin  string
	args []string
	env  []string
	Addr string // host:port

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// FreeAddr returns a loopback address with a port that was free just now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start runs `pgrealtime serve --listen <free address> args...` with env
// added to a copy of the environment stripped of PGREALTIME_* settings, and
// waits until /readyz answers 200. The process is killed when the test ends.
func Start(t testing.TB, args []string, env ...string) *Server {
	t.Helper()
	s := New(t, args, env...)
	s.Restart()
	return s
}

// StartUnready is Start for a server that is not expected to become ready
// (its Postgres is unreachable): it waits for /healthz only.
func StartUnready(t testing.TB, args []string, env ...string) *Server {
	t.Helper()
	s := New(t, args, env...)
	s.path = "/healthz"
	s.Restart()
	return s
}

// New prepares a server on a free address without starting it: Launch (or
// Restart) starts it. The process is killed when the test ends.
func New(t testing.TB, args []string, env ...string) *Server {
	t.Helper()
	s := &Server{t: t, path: "/readyz", bin: Binary(t), args: args, env: env, Addr: FreeAddr(t)}
	t.Cleanup(func() { s.Kill() })
	return s
}

// URL is the WebSocket URL of /realtime.
func (s *Server) URL() string { return "ws://" + s.Addr + "/realtime" }

// Output is what the current (or last) process wrote to stdout and stderr.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Restart starts the process again (after Kill or Stop) at the same address
// and waits for it to be ready.
func (s *Server) Restart() {
	s.t.Helper()
	s.Launch()
	if err := s.WaitReady(60 * time.Second); err != nil {
		s.t.Fatal(err)
	}
}

// Launch starts the process (after New, Kill or Stop) at the same address
// and returns at once; WaitReady waits for it. It does not call t.Fatal
// from another goroutine: a failure to start is reported by WaitReady.
func (s *Server) Launch() {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGREALTIME_") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(s.bin, append([]string{"serve", "--listen", s.Addr, "--log-format", "console"}, s.args...)...)
	cmd.Env = append(env, s.env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	exited := make(chan struct{})
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(out, "start pgrealtime: %v\n", err)
		close(exited)
	} else {
		go func() { cmd.Wait(); close(exited) }()
	}
	s.mu.Lock()
	s.cmd, s.out, s.exited = cmd, out, exited
	s.mu.Unlock()
}

// WaitReady waits up to timeout for the launched process to answer 200 on
// /readyz (/healthz for StartUnready). The error carries the process's
// output when it exited first or never became ready.
func (s *Server) WaitReady(timeout time.Duration) error {
	s.mu.Lock()
	exited, out := s.exited, s.out
	s.mu.Unlock()
	if exited == nil {
		return fmt.Errorf("pgrealtime %s: not launched", s.Addr)
	}
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("pgrealtime %s exited before it was ready:\n%s", s.Addr, out.String())
		default:
		}
		resp, err := client.Get("http://" + s.Addr + s.path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a stand-in for a condition
	}
	return fmt.Errorf("pgrealtime %s: no 200 from %s within %s:\n%s", s.Addr, s.path, timeout, out.String())
}

// Running reports whether the process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop sends SIGTERM and waits for the process to exit.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
