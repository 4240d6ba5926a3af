//go:build unix

// Package redistest is the shared test helper that gives tests a real Redis:
// a throwaway redis-server on a free loopback port, its files in a temporary
// directory, which a test may stop, restart (keeping or losing its data),
// SIGKILL, pause and resume, to exercise failures. Everything is stopped and
// removed when the test ends.
//
// Persistence is what the test asks for: by default none (`--save ""`,
// `--appendonly no`), so a restart loses every key; with Options.AOF the
// append-only file is on with `appendfsync always` (or Options.AppendFsync),
// so a restart, graceful or after SIGKILL, keeps every write the server
// answered. RestartEmpty deletes the server's files before starting it again:
// data is lost whatever the configuration (a Redis that lost its disk, or a
// failover to an empty replica).
//
// When redis-server cannot be found (PATH, then /usr/bin, /usr/local/bin,
// /usr/sbin; or the file named by PGREALTIME_TEST_REDIS_SERVER), tests are
// skipped, except under CI=true, where that is a failure.
package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/redisproc"
)

// EnvServer names the variable that points the helper at a redis-server
// binary.
const EnvServer = "PGREALTIME_TEST_REDIS_SERVER"

// ErrNoServer is returned when no redis-server binary is found.
var ErrNoServer = errors.New("redis-server not found: install it with `apt-get install -y redis-server` (Debian/Ubuntu), put it on PATH, or set " + EnvServer)

// startTimeout bounds how long a start (the load of a persisted file
// included) and a graceful stop may take.
const startTimeout = 30 * time.Second

// Options configure a server.
type Options struct {
	// AOF turns the append-only file on.
	AOF bool
	// AppendFsync is the appendfsync policy with AOF: "always" (default:
	// nothing the server answered is lost, even by SIGKILL), "everysec" or
	// "no".
	AppendFsync string
	// Args are extra redis-server arguments, e.g. "--maxmemory", "10mb".
	Args []string
	// Binary is the redis-server to run; empty means EnvServer, then PATH
	// and the usual directories.
	Binary string
}

// Server is one throwaway redis-server. Its methods fail the test on error;
// they must be called from the test's goroutine.
type Server struct {
	// Port is the loopback TCP port, the same across restarts.
	Port int
	// Dir holds the server's files (AOF, log).
	Dir string
	// LogFile is the server's log.
	LogFile string

	t      testing.TB
	binary string
	opt    Options

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// Start starts a server and stops it, removing its files, when the test
// ends. Without redis-server the test is skipped (failed under CI=true) and
// Start returns nil.
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	bin, err := FindServer(opt.Binary)
	if err != nil {
		unavailable(t, err)
		return nil
	}
	switch opt.AppendFsync {
	case "":
		opt.AppendFsync = "always"
	case "always", "everysec", "no":
	default:
		t.Fatalf("redistest: AppendFsync %q: want always, everysec or no", opt.AppendFsync)
		return nil
	}
	dir, err := os.MkdirTemp("", "pgrealtime-redis-")
	if err != nil {
		t.Fatalf("redistest: %v", err)
		return nil
	}
	s := &Server{Dir: dir, LogFile: filepath.Join(dir, "redis.log"), t: t, binary: bin, opt: opt}
	t.Cleanup(s.cleanup)
	// A free port can be taken by someone else before redis-server binds
	// it: try a few.
	for attempt := 1; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			t.Fatalf("redistest: free port: %v", err)
			return nil
		}
		err = s.launch()
		if err == nil {
			return s
		}
		if attempt == 5 || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("redistest: start redis-server: %v", err)
			return nil
		}
	}
}

// unavailable skips the test, or fails it under CI=true.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("redis-server is required under CI=true: %v", err)
		return
	}
	t.Skipf("redis not available: %v", err)
}

// FindServer returns the redis-server to run: bin when set, else
// EnvServer, else PATH, else /usr/bin, /usr/local/bin or /usr/sbin.
func FindServer(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv(EnvServer)
	}
	if bin != "" {
		if st, err := os.Stat(bin); err != nil || st.IsDir() {
			return "", fmt.Errorf("%w (%s does not exist)", ErrNoServer, bin)
		}
		return bin, nil
	}
	if p, err := redisproc.Find(); err == nil {
		return p, nil
	}
	return "", ErrNoServer
}

// Addr is "127.0.0.1:<port>".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL is "redis://127.0.0.1:<port>/0".
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// args is the server's command line.
func (s *Server) args() []string {
	aof := "no"
	if s.opt.AOF {
		aof = "yes"
	}
	a := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.Port),
		"--dir", s.Dir,
		"--logfile", s.LogFile,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", aof,
		"--appendfsync", s.opt.AppendFsync,
		"--dbfilename", "dump.rdb",
	}
	return append(a, s.opt.Args...)
}

// launch starts the process and waits until it answers PING.
func (s *Server) launch() error {
	cmd := exec.Command(s.binary, s.args()...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited at start: %s", s.logTail())
		default:
		}
		if err := redisproc.Ping(s.Addr(), 200*time.Millisecond); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server did not answer PING within %s: %v; log: %s", startTimeout, err, s.logTail())
		}
		// Wait for the process to exit or the next attempt.
		select {
		case <-exited:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Running reports whether the server process is running (a paused one
// included).
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

// PID is the server process's id (0 when none was started).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop stops the server gracefully (SIGTERM): with AOF its file is flushed;
// without persistence its data is gone.
func (s *Server) Stop() {
	s.t.Helper()
	if !s.Running() {
		s.t.Fatal("redistest: Stop: the server is not running")
		return
	}
	s.signal(syscall.SIGCONT) // a paused server cannot handle SIGTERM
	s.signal(syscall.SIGTERM)
	if !s.waitExit(startTimeout) {
		s.kill()
		s.t.Fatalf("redistest: redis-server did not stop within %s after SIGTERM (killed); log: %s", startTimeout, s.logTail())
	}
}

// Kill stops the server with SIGKILL and waits until it is gone: clients
// see their connections reset; with AOF and appendfsync always every write
// it answered is kept.
func (s *Server) Kill() {
	s.t.Helper()
	if !s.Running() {
		s.t.Fatal("redistest: Kill: the server is not running")
		return
	}
	s.kill()
}

func (s *Server) kill() {
	s.signal(syscall.SIGKILL)
	s.waitExit(startTimeout)
}

// Pause stops the server process (SIGSTOP) without closing its sockets:
// clients see a Redis that does not answer (a network partition, a stalled
// server) until Resume.
func (s *Server) Pause() {
	s.t.Helper()
	if !s.Running() {
		s.t.Fatal("redistest: Pause: the server is not running")
		return
	}
	s.signal(syscall.SIGSTOP)
}

// Resume continues a paused server.
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(syscall.SIGCONT)
}

// Restart starts the stopped or killed server again, on the same port and
// with the same files: it has its persisted data, if any. A running server
// is stopped gracefully first.
func (s *Server) Restart() {
	s.t.Helper()
	if s.Running() {
		s.Stop()
	}
	if err := s.launch(); err != nil {
		s.t.Fatalf("redistest: restart redis-server: %v", err)
	}
}

// RestartEmpty is Restart after deleting the server's persisted files: it
// comes back empty whatever its configuration. A running server is killed
// first (SIGKILL, so that nothing is written on the way down).
func (s *Server) RestartEmpty() {
	s.t.Helper()
	if s.Running() {
		s.kill()
	}
	for _, name := range []string{"appendonlydir", "appendonly.aof", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(s.Dir, name)); err != nil {
			s.t.Fatalf("redistest: remove persisted files: %v", err)
		}
	}
	if err := s.launch(); err != nil {
		s.t.Fatalf("redistest: restart redis-server: %v", err)
	}
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// waitExit waits up to d for the process to exit and reports whether it
// did.
func (s *Server) waitExit(d time.Duration) bool {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

// cleanup kills the server and removes its directory (test end).
func (s *Server) cleanup() {
	if s.Running() {
		s.kill()
	}
	_ = os.RemoveAll(s.Dir)
}

// logTail is the end of the server's log, for error messages.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.LogFile)
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
