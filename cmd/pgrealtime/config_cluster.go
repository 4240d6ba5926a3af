package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/redis/rueidis"
)

// Cluster-mode settings (PROTOCOL section 8, docs/cluster.md section 11):
// --redis-url and --node-id. Their rows are in the options table of
// config.go; their validation is here.

// maxNodeIDLen bounds --node-id (it is a Redis hash field and part of the
// lock session's application_name).
const maxNodeIDLen = 64

// redisSchemes are the --redis-url schemes cluster mode accepts.
var redisSchemes = []string{"redis", "rediss", "unix"}

// setRedisURL checks v with rueidis.ParseURL, the parser cmd uses to build
// the client, and keeps it as given.
func setRedisURL(c *Config, v string) error {
	v = strings.TrimSpace(v)
	if err := checkRedisURL(v); err != nil {
		return err
	}
	c.RedisURL = v
	return nil
}

// checkRedisURL says what is wrong with a Redis URL, without quoting its
// password.
func checkRedisURL(v string) error {
	const example = "e.g. redis://host:6379/0, rediss://user:password@host:6380/0 or unix:///run/redis.sock"
	if !strings.Contains(v, "://") {
		return fmt.Errorf("must start with redis://, rediss:// (TLS) or unix:// (%s)", example)
	}
	u, err := url.Parse(v)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the URL, password included
		}
		return fmt.Errorf("not a valid Redis URL (%s): %v", example, err)
	}
	scheme := strings.ToLower(u.Scheme)
	known := false
	for _, s := range redisSchemes {
		known = known || scheme == s
	}
	if !known {
		return fmt.Errorf("unsupported scheme %q: use redis://, rediss:// (TLS) or unix:// (%s)", u.Scheme, example)
	}
	if scheme == "unix" && strings.TrimSpace(u.Path) == "" {
		return fmt.Errorf("unix:// needs the socket's path (e.g. unix:///run/redis.sock)")
	}
	if _, err := rueidis.ParseURL(v); err != nil {
		return fmt.Errorf("not a valid Redis URL (%s): %s", example, strings.TrimPrefix(err.Error(), "redis: "))
	}
	return nil
}

// setNodeID checks an explicit --node-id.
func setNodeID(c *Config, v string) error {
	if err := checkNodeID(v); err != nil {
		return err
	}
	c.NodeID = v
	return nil
}

func checkNodeID(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	if len(v) > maxNodeIDLen {
		return fmt.Errorf("must be at most %d bytes, got %d", maxNodeIDLen, len(v))
	}
	for i := 0; i < len(v); i++ {
		if !nodeIDByte(v[i]) {
			return fmt.Errorf("must contain only letters, digits and . _ : - (at most %d), got %q", maxNodeIDLen, v)
		}
	}
	return nil
}

func nodeIDByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == ':' || b == '-'
}

// defaultNodeID is "<host name>-<pid>": characters outside the node id
// alphabet become '-', and the host name is shortened so that the whole
// fits in maxNodeIDLen.
func defaultNodeID(hostname string, pid int) string {
	suffix := "-" + strconv.Itoa(pid)
	b := []byte(hostname)
	for i := range b {
		if !nodeIDByte(b[i]) {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		b = []byte("node")
	}
	if max := maxNodeIDLen - len(suffix); len(b) > max {
		b = b[:max]
	}
	return string(b) + suffix
}

// checkCluster completes the cluster settings of serve: the default
// --node-id.
func checkCluster(c *Config) error {
	if c.NodeID == "" {
		host, _ := os.Hostname()
		c.NodeID = defaultNodeID(host, os.Getpid())
	}
	return nil
}
