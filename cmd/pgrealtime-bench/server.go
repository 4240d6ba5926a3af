package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

// server is one running pgrealtime process.
type server struct {
	cmd     *exec.Cmd
	Addr    string // host:port
	Started time.Time
	logPath string
	done    chan struct{}
	waitErr error
}

// serverOptions are the settings every pgrealtime process of a run shares.
type serverOptions struct {
	Binary      string
	DatabaseURL string
	Secret      string
	Extra       []string // appended to every command line
	RulesFile   string
	WorkDir     string
}

// startServer launches `pgrealtime serve` on a free loopback port. It
// returns as soon as the process runs; call waitReady to wait for /readyz.
func startServer(o serverOptions, extra ...string) (*server, error) {
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"serve",
		"--database-url", o.DatabaseURL,
		"--listen", addr,
		"--jwt-secret", o.Secret,
		"--config", o.RulesFile,
		"--log-level", "warn",
	}, extra...)
	args = append(args, o.Extra...)
	logPath := filepath.Join(o.WorkDir, fmt.Sprintf("pgrealtime-%d.log", port))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv()
	s := &server{cmd: cmd, Addr: addr, logPath: logPath, done: make(chan struct{})}
	s.Started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	go func() {
		s.waitErr = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return s, nil
}

// cleanEnv is the environment without PGREALTIME_* and DATABASE_URL, so
// that only the flags given here configure the server. PGREALTIME_PPROF_ADDR
// and PGREALTIME_CPUPROFILE_* are kept: a server built with -tags pprof
// serves or writes profiles as they say (cmd/pgrealtime/pprof.go).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PGREALTIME_PPROF_ADDR=") || strings.HasPrefix(kv, "PGREALTIME_CPUPROFILE_") {
			env = append(env, kv)
			continue
		}
		if strings.HasPrefix(kv, "PGREALTIME_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Pid is the server's process id.
func (s *server) Pid() int { return s.cmd.Process.Pid }

// URL is the WebSocket endpoint.
func (s *server) URL() string { return "ws://" + s.Addr + "/realtime" }

// waitReady polls /readyz until it answers 200.
func (s *server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("pgrealtime exited before it was ready (%v): %s", s.waitErr, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("pgrealtime not ready within %s: %s", timeout, s.logTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// metric fetches one un-labelled value from /metrics (NaN-free; ok=false
// when absent).
func (s *server) metric(ctx context.Context, name string) (float64, bool) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// stop sends SIGTERM and waits (15 s, then SIGKILL).
func (s *server) stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("pgrealtime did not exit within 15 s of SIGTERM: %s", s.logTail())
	}
	var ee *exec.ExitError
	if s.waitErr != nil && !errors.As(s.waitErr, &ee) {
		return s.waitErr
	}
	if s.waitErr != nil {
		return fmt.Errorf("pgrealtime exited with %v: %s", s.waitErr, s.logTail())
	}
	return nil
}

// exited reports whether the process has ended.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

// adminToken mints an HS256 token with the admin role, valid for two hours.
func adminToken(secret string) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":  "bench",
		"role": "admin",
		"exp":  time.Now().Add(2 * time.Hour).Unix(),
	})
	return tok.SignedString([]byte(secret))
}
