package main

import (
	"bytes"
	"net/url"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeClusterProfile checks the `cluster` profile of
// docker-compose.yml (docker compose itself cannot run here): Redis with an
// fsync-always append-only file, and at least two pgrealtime nodes on the
// same Postgres, Redis and slot, with distinct node ids and host ports, and
// settings the binary accepts.
func TestComposeClusterProfile(t *testing.T) {
	type service struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Profiles    []string          `yaml:"profiles"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Ports       []string          `yaml:"ports"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	}
	var compose struct {
		Services map[string]service `yaml:"services"`
		Volumes  map[string]any     `yaml:"volumes"`
	}
	if err := yaml.NewDecoder(bytes.NewReader(repoFile(t, "docker-compose.yml"))).Decode(&compose); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, e := range knownEnv() {
		known[e] = true
	}
	redis, ok := compose.Services["redis"]
	if !ok {
		t.Fatal("no redis service")
	}
	cmd := strings.Join(redis.Command, " ")
	if !slices.Contains(redis.Profiles, "cluster") || !strings.HasPrefix(redis.Image, "redis:7") ||
		!strings.Contains(cmd, "--appendonly yes") || !strings.Contains(cmd, "--appendfsync always") {
		t.Errorf("redis: profiles %q, image %q, command %q; want profile cluster, redis:7, --appendonly yes --appendfsync always", redis.Profiles, redis.Image, cmd)
	}
	if len(redis.Volumes) == 0 || len(redis.Healthcheck.Test) == 0 {
		t.Errorf("redis has no volume (its AOF) or no healthcheck")
	}
	nodes, ids, ports, slots := 0, map[string]bool{}, map[string]bool{}, map[string]bool{}
	single := compose.Services["pgrealtime"].Environment["PGREALTIME_SLOT"]
	for name, s := range compose.Services {
		if !slices.Contains(s.Profiles, "cluster") || s.Environment["PGREALTIME_REDIS_URL"] == "" {
			continue
		}
		nodes++
		env := map[string]string{}
		for k, v := range s.Environment {
			if !known[k] {
				t.Errorf("%s sets %s, which pgrealtime does not read", name, k)
			}
			env[k] = v
		}
		cfg, err := parseConfig(cmdServe, "serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{})
		if err != nil {
			t.Errorf("%s: not a valid configuration: %v", name, err)
			continue
		}
		if err := checkDatabaseURL(cfg); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if u, err := url.Parse(cfg.RedisURL); err != nil || u.Hostname() != "redis" {
			t.Errorf("%s: --redis-url %q does not point at the redis service", name, cfg.RedisURL)
		}
		if cfg.NodeID == "" || ids[cfg.NodeID] {
			t.Errorf("%s: node id %q missing or used twice", name, cfg.NodeID)
		}
		ids[cfg.NodeID] = true
		slots[cfg.Slot] = true
		if cfg.Slot == single {
			t.Errorf("%s uses the single node's slot %q: both would compete for it", name, cfg.Slot)
		}
		if len(s.Ports) != 1 || ports[strings.Split(s.Ports[0], ":")[0]] {
			t.Errorf("%s: ports %q: want one host port, distinct from the other nodes'", name, s.Ports)
		} else {
			ports[strings.Split(s.Ports[0], ":")[0]] = true
		}
		if s.Build == nil || s.DependsOn["postgres"].Condition != "service_healthy" || s.DependsOn["redis"].Condition != "service_healthy" {
			t.Errorf("%s: build %v, depends_on %+v", name, s.Build, s.DependsOn)
		}
		if strings.Join(s.Healthcheck.Test, " ") != "CMD /pgrealtime healthcheck" {
			t.Errorf("%s: healthcheck %q", name, s.Healthcheck.Test)
		}
	}
	if nodes < 2 || len(slots) != 1 {
		t.Fatalf("cluster profile: %d pgrealtime nodes on slots %v; want at least 2 on one slot", nodes, slots)
	}
	if _, ok := compose.Volumes["redisdata"]; !ok {
		t.Error("no redisdata volume")
	}
}
