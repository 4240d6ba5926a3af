package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
	"github.com/pgrealtime/pgrealtime/internal/redisproc"
)

// redisAppendFsync is the AOF policy of the benchmark's Redis: the AOF is
// on, as docs/cluster.md recommends, fsynced once a second by a background
// thread (Postgres runs with fsync off here: the disk is not what is
// measured).
const redisAppendFsync = "everysec"

// redisServer is the throwaway redis-server of the cluster measurements.
type redisServer struct {
	cmd  *exec.Cmd
	Port int
	log  string
	done chan struct{}
}

// startRedis starts redis-server on a free loopback port with its files
// under work, and waits until it answers PING.
func startRedis(work string) (*redisServer, error) {
	bin, err := redisproc.Find()
	if err != nil {
		return nil, fmt.Errorf("%w (the cluster measurements need it): install it with `apt-get install -y redis-server` or put it on PATH", err)
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &redisServer{Port: port, log: filepath.Join(dir, "redis.log"), done: make(chan struct{})}
	r.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--logfile", r.log, "--daemonize", "no", "--save", "", "--appendonly", "yes", "--appendfsync", redisAppendFsync)
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := redisproc.Ping(r.addr(), time.Second)
		if err == nil {
			return r, nil
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("redis-server exited at start: %s", r.logTail())
		default:
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("redis-server did not answer PING within 30 s (%v): %s", err, r.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// URL is the --redis-url of the nodes.
func (r *redisServer) URL() string { return "redis://" + r.addr() + "/0" }

// stop ends redis-server (SIGTERM, then SIGKILL after 15 s).
func (r *redisServer) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

func (r *redisServer) logTail() string {
	b, _ := os.ReadFile(r.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}
