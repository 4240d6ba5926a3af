package main

// Helpers for process-level tests: the real binary, run as a subprocess.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

const binDirPrefix = "pgrealtime-cmdtest-"

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// binary builds the pgrealtime binary once per test process.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "pgrealtime")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// go test puts its own GOROOT/bin first in PATH.
		cmd := exec.CommandContext(ctx, "go", "build", "-o", binPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// sweepStaleBinaries removes binaries built by earlier test processes that
// are gone (pgtest.Main exits the process, so no deferred cleanup runs).
func sweepStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), binDirPrefix)
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// lockedBuffer is an io.Writer safe for the process's output goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a running pgrealtime process.
type proc struct {
	t        *testing.T
	cmd      *exec.Cmd
	stdout   *lockedBuffer
	stderr   *lockedBuffer
	exited   chan struct{}
	exitCode atomic.Int32
	start    time.Time
}

// cleanEnv is the test's environment without settings pgrealtime reads.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PGREALTIME_") || strings.HasPrefix(kv, "DATABASE_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	p.cmd.Dir = t.TempDir()
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		p.exitCode.Store(int32(code))
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("pgrealtime %s stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout, tail(p.stderr.String(), 8000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return int(p.exitCode.Load())
	case <-time.After(timeout):
		p.t.Fatalf("pgrealtime did not exit within %v", timeout)
	}
	return -1
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// waitHTTP polls url until it answers want, failing if the process exits.
func (p *proc) waitHTTP(ctx context.Context, url string, want int) {
	p.t.Helper()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-p.exited:
			p.t.Fatalf("pgrealtime exited (code %d) while waiting for %s %d (last: %s)", p.exitCode.Load(), url, want, last)
		case <-ctx.Done():
			p.t.Fatalf("waiting for %s to answer %d: %v (last: %s)", url, want, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

var nameSeq atomic.Int64

// uniqueName returns a slot/publication name unique in the shared cluster
// (slots are cluster-wide).
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), nameSeq.Add(1))
}

// msg is one server frame.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }

// wsClient is a real WebSocket client.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

func dialWS(ctx context.Context, t *testing.T, addr, token string) *wsClient {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+"/realtime", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial ws://%s/realtime: %v (HTTP %d)", addr, err, status)
	}
	c.SetReadLimit(16 << 20)
	w := &wsClient{t: t, c: c}
	t.Cleanup(func() { c.CloseNow() })
	first, err := w.read(ctx)
	if err != nil {
		t.Fatalf("first frame: %v", err)
	}
	if first.str("type") != "connected" {
		t.Fatalf("first frame %v, want connected", first)
	}
	return w
}

func (w *wsClient) read(ctx context.Context) (msg, error) {
	_, data, err := w.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	var m msg
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("frame %q: %w", data, err)
	}
	return m, nil
}

func (w *wsClient) send(ctx context.Context, v any) {
	w.t.Helper()
	b, _ := json.Marshal(v)
	if err := w.c.Write(ctx, websocket.MessageText, b); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// subscribe sends a subscribe and returns its reply (subscribed or error)
// and the events received before it (a replay may precede the reply).
func (w *wsClient) subscribe(ctx context.Context, id string, topics []string, since string) (msg, []msg) {
	w.t.Helper()
	req := map[string]any{"type": "subscribe", "id": id, "topics": topics}
	if since != "" {
		req["since"] = since
	}
	w.send(ctx, req)
	var events []msg
	for {
		m, err := w.read(ctx)
		if err != nil {
			w.t.Fatalf("waiting for the reply to subscribe %s: %v", id, err)
		}
		switch {
		case m.str("id") == id:
			return m, events
		case strings.HasSuffix(m.str("type"), "_event"):
			events = append(events, m)
		}
	}
}

// nextEvent returns the next record or custom event.
func (w *wsClient) nextEvent(ctx context.Context) msg {
	w.t.Helper()
	for {
		m, err := w.read(ctx)
		if err != nil {
			w.t.Fatalf("waiting for an event: %v", err)
		}
		if strings.HasSuffix(m.str("type"), "_event") {
			return m
		}
	}
}
