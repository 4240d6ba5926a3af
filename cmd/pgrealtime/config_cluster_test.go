package main

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterFlagsExit2Process: the real binary refuses bad --redis-url and
// --node-id values with exit 2 and one line naming the setting, and never
// prints a Redis password.
func TestClusterFlagsExit2Process(t *testing.T) {
	db := "DATABASE_URL=postgres://x@127.0.0.1:1/db"
	long := strings.Repeat("n", 65)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"malformed url", nil, []string{"--redis-url", "redis://u:hunter2@host:notaport/0"}, []string{"pgrealtime: --redis-url: not a valid Redis URL", "notaport"}},
		{"bad database number", nil, []string{"--redis-url=redis://127.0.0.1:6379/zero"}, []string{"--redis-url: not a valid Redis URL", `"zero"`}},
		{"unsupported scheme", nil, []string{"--redis-url=http://127.0.0.1:6379"}, []string{"--redis-url: unsupported scheme \"http\""}},
		{"no scheme", []string{"PGREALTIME_REDIS_URL=127.0.0.1:6379"}, nil, []string{"PGREALTIME_REDIS_URL: must start with redis://, rediss:// (TLS) or unix://"}},
		{"empty scheme", nil, []string{"--redis-url=://127.0.0.1:6379"}, []string{"--redis-url: not a valid Redis URL", "missing protocol scheme"}},
		{"unix without path", nil, []string{"--redis-url=unix://"}, []string{"--redis-url: unix:// needs the socket's path"}},
		{"bad node id", nil, []string{"--node-id=node 1"}, []string{"--node-id: must contain only letters, digits and . _ : -", `"node 1"`}},
		{"node id from env", []string{"PGREALTIME_NODE_ID=a/b"}, nil, []string{"PGREALTIME_NODE_ID: ", `"a/b"`}},
		{"too long node id", nil, []string{"--node-id=" + long}, []string{"--node-id: must be at most 64 bytes, got 65"}},
		{"empty node id", nil, []string{"--node-id="}, []string{"--node-id: must not be empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, append([]string{db}, tc.env...), append([]string{"serve"}, tc.args...)...)
			if code := p.wait(20 * time.Second); code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, p.stderr.String())
			}
			got := p.stderr.String()
			if strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "pgrealtime: ") {
				t.Errorf("stderr is not one pgrealtime: line: %q", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("stderr %q does not mention %q", got, w)
				}
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("stderr leaks the password: %q", got)
			}
		})
	}
}

// TestClusterUnreachableRedisProcess: a node whose Redis does not answer
// yet keeps trying (it may start before Redis), says so without the
// password, and stops cleanly on SIGTERM while waiting.
func TestClusterUnreachableRedisProcess(t *testing.T) {
	p := startProc(t, []string{"DATABASE_URL=postgres://x@127.0.0.1:1/db", "PGREALTIME_REDIS_URL=redis://u:hunter2@127.0.0.1:1/0"}, "serve", "--node-id=n1.a:b_c-d")
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(p.stderr.String(), "cannot reach Redis (--redis-url); retrying") < 2 {
		if time.Now().After(deadline) || !p.running() {
			t.Fatalf("no two retries logged within 20 s (running %v): %s", p.running(), p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM while waiting for Redis, want 0; stderr %s", code, p.stderr.String())
	}
	if got := p.stderr.String(); strings.Contains(got, "hunter2") || !strings.Contains(got, "u:xxxxx@127.0.0.1:1") {
		t.Fatalf("the log must name the URL without its password: %s", got)
	}
}

func TestClusterFlagsParse(t *testing.T) {
	c, err := parseConfig(cmdServe, "serve", []string{"--node-id=web-1"},
		envOf("PGREALTIME_REDIS_URL", " redis://:pw@10.0.0.5:6379/3 "), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL != "redis://:pw@10.0.0.5:6379/3" || c.NodeID != "web-1" || c.Source("redis-url") != "PGREALTIME_REDIS_URL" {
		t.Fatalf("redis url %q from %q, node id %q", c.RedisURL, c.Source("redis-url"), c.NodeID)
	}
	for _, u := range []string{"redis://localhost", "rediss://h:6380/0?dial_timeout=2s", "unix:///run/redis.sock"} {
		if err := checkRedisURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	// Without --redis-url nothing changes: no error, a default node id.
	d, err := parseConfig(cmdServe, "serve", nil, envOf(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkCluster(d); err != nil || d.RedisURL != "" || checkNodeID(d.NodeID) != nil {
		t.Fatalf("defaults: %v, redis url %q, node id %q", err, d.RedisURL, d.NodeID)
	}
	// dev and the other commands do not take the cluster flags.
	if _, err := parseConfig(cmdDev, "dev", []string{"--redis-url=redis://h"}, envOf(), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "unknown flag") {
		t.Fatalf("dev --redis-url: %v", err)
	}
}

func TestDefaultNodeID(t *testing.T) {
	for _, tc := range []struct {
		host string
		pid  int
		want string
	}{
		{"web-1.example.com", 42, "web-1.example.com-42"},
		{"", 7, "node-7"},
		{"héllo wörld", 1, "h--llo-w--rld-1"},
		{strings.Repeat("h", 80), 123456, strings.Repeat("h", 64-7) + "-123456"},
	} {
		got := defaultNodeID(tc.host, tc.pid)
		if got != tc.want {
			t.Errorf("defaultNodeID(%q, %d) = %q, want %q", tc.host, tc.pid, got, tc.want)
		}
		if err := checkNodeID(got); err != nil {
			t.Errorf("defaultNodeID(%q, %d) = %q is not a valid node id: %v", tc.host, tc.pid, got, err)
		}
	}
}
