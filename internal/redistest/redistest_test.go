package redistest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPingSetGet(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s)
	if got := c.must(t, "PING"); got != "PONG" {
		t.Fatalf("PING = %v, want PONG", got)
	}
	if got := c.must(t, "SET", "k", "v"); got != "OK" {
		t.Fatalf("SET = %v", got)
	}
	if got := c.must(t, "GET", "k"); got != "v" {
		t.Fatalf("GET = %v, want v", got)
	}
	if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") {
		t.Fatalf("URL = %s", s.URL())
	}
}

func TestTwoServersAreIndependent(t *testing.T) {
	a, b := Start(t, Options{}), Start(t, Options{})
	if a.Port == b.Port || a.Dir == b.Dir {
		t.Fatalf("servers share port %d/%d or dir %s/%s", a.Port, b.Port, a.Dir, b.Dir)
	}
	dial(t, a).must(t, "SET", "k", "a")
	if got := dial(t, b).must(t, "GET", "k"); got != nil {
		t.Fatalf("GET on the other server = %v, want nil", got)
	}
}

// restarts are the ways a test can take a server down and bring it back.
var restarts = []struct {
	name string
	down func(*Server)
}{
	{"graceful", (*Server).Stop},
	{"sigkill", (*Server).Kill},
}

func TestRestartWithAOFKeepsData(t *testing.T) {
	for _, r := range restarts {
		t.Run(r.name, func(t *testing.T) {
			s := Start(t, Options{AOF: true})
			port := s.Port
			dial(t, s).must(t, "SET", "k", "v")
			r.down(s)
			if s.Running() {
				t.Fatal("server still running after stop")
			}
			s.Restart()
			if s.Port != port {
				t.Fatalf("port changed from %d to %d", port, s.Port)
			}
			if got := dial(t, s).must(t, "GET", "k"); got != "v" {
				t.Fatalf("GET after %s restart with AOF = %v, want v", r.name, got)
			}
		})
	}
}

func TestRestartWithoutPersistenceLosesData(t *testing.T) {
	for _, r := range restarts {
		t.Run(r.name, func(t *testing.T) {
			s := Start(t, Options{})
			dial(t, s).must(t, "SET", "k", "v")
			r.down(s)
			s.Restart()
			if got := dial(t, s).must(t, "GET", "k"); got != nil {
				t.Fatalf("GET after %s restart without persistence = %v, want nil", r.name, got)
			}
		})
	}
}

func TestRestartEmptyLosesAOFData(t *testing.T) {
	s := Start(t, Options{AOF: true})
	dial(t, s).must(t, "SET", "k", "v")
	s.RestartEmpty()
	if got := dial(t, s).must(t, "GET", "k"); got != nil {
		t.Fatalf("GET after RestartEmpty = %v, want nil", got)
	}
}

func TestKillDropsClients(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s)
	c.must(t, "PING")
	s.Kill()
	if s.Running() {
		t.Fatal("Running after Kill")
	}
	if _, err := c.do(5*time.Second, "PING"); err == nil {
		t.Fatal("a client of the killed server got an answer")
	}
}

func TestPauseResume(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s)
	c.must(t, "SET", "k", "v")
	s.Pause()
	// No answer within a bound: a paused server is silent, not gone.
	if v, err := c.do(300*time.Millisecond, "GET", "k"); !isTimeout(err) {
		t.Fatalf("paused server: reply %v, err %v; want a timeout", v, err)
	}
	if !s.Running() {
		t.Fatal("a paused server is not Running")
	}
	s.Resume()
	if got := dial(t, s).must(t, "GET", "k"); got != "v" {
		t.Fatalf("GET after Resume = %v, want v", got)
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func TestCleanupStopsServerAndRemovesFiles(t *testing.T) {
	var pid int
	var dir string
	t.Run("server", func(t *testing.T) {
		s := Start(t, Options{AOF: true})
		dial(t, s).must(t, "SET", "k", "v")
		pid, dir = s.PID(), s.Dir
	})
	if pid == 0 {
		t.Skip("no server was started")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("redis-server %d still exists after the test ended (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still exists after the test ended (stat: %v)", dir, err)
	}
}

// recordingTB records Skipf and Fatalf instead of ending the test.
type recordingTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestMissingServerSkipsOrFailsUnderCI(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "redis-server")
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			rec := &recordingTB{TB: t}
			if s := Start(rec, Options{Binary: missing}); s != nil {
				t.Fatal("Start returned a server without a binary")
			}
			switch {
			case ci == "true" && (rec.failed == "" || rec.skipped != ""):
				t.Fatalf("under CI=true: failed %q, skipped %q; want a failure", rec.failed, rec.skipped)
			case ci == "" && (rec.skipped == "" || rec.failed != ""):
				t.Fatalf("without CI: failed %q, skipped %q; want a skip", rec.failed, rec.skipped)
			}
			if msg := rec.failed + rec.skipped; !strings.Contains(msg, "apt-get install -y redis-server") || !strings.Contains(msg, missing) {
				t.Fatalf("message does not say what to do: %q", msg)
			}
		})
	}
}

func TestBadAppendFsyncFails(t *testing.T) {
	rec := &recordingTB{TB: t}
	if s := Start(rec, Options{AOF: true, AppendFsync: "sometimes"}); s != nil || !strings.Contains(rec.failed, "always, everysec or no") {
		t.Fatalf("server %v, failure %q", s, rec.failed)
	}
}
