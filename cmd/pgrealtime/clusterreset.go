package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/cluster"
)

// `pgrealtime cluster reset` (docs/cluster.md section 6 "Foreign stream",
// section 13 step 11): delete every key of one cluster from Redis, after
// checking that none of its nodes runs.

const clusterUsage = `Usage: pgrealtime cluster <command> [flags]

Commands:
  reset   delete every Redis key of the cluster named by --slot
          (pgrealtime:{<slot>}:*), refused while one of its nodes runs;
          without --yes it only lists them

Run "pgrealtime cluster reset --help" for its flags.
`

const (
	// resetScanCount is the COUNT hint of each SCAN.
	resetScanCount = 1000
	// resetBatch is how many UNLINKs go to Redis in one round trip.
	resetBatch = 100
	// resetTimeout bounds the whole reset.
	resetTimeout = 2 * time.Minute
	// resetFresh is the age below which a node entry counts as a running
	// node: the Registry's freshness.
	resetFresh = cluster.DefaultFresh
)

// errNodeAlive is wrapped by the refusal to reset a cluster that runs.
var errNodeAlive = errors.New("refused")

// runCluster dispatches `pgrealtime cluster <command>`.
func runCluster(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, clusterUsage)
		return configErr("", "missing cluster command (reset)")
	}
	switch args[0] {
	case "reset":
		return runClusterReset(ctx, args[1:], getenv, stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, clusterUsage)
		return nil
	}
	fmt.Fprint(stderr, clusterUsage)
	return configErr("", "unknown cluster command %q (reset)", args[0])
}

// runClusterReset deletes the Redis keys of the cluster named by --slot.
// Without --yes it lists them and exits 2.
func runClusterReset(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(cmdClusterReset, "cluster reset", args, getenv, stdout)
	if err != nil {
		return err
	}
	if cfg.RedisURL == "" {
		return configErr("--redis-url", "required: the Redis of the cluster to reset (e.g. redis://host:6379/0)")
	}
	ctx, cancel := context.WithTimeout(ctx, resetTimeout)
	defer cancel()
	setting := cfg.Source("redis-url")
	opt, err := rueidis.ParseURL(cfg.RedisURL)
	if err != nil { // checked by parseConfig already
		return configErr(setting, "not a valid Redis URL: %v", err)
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return fmt.Errorf("cluster reset: cannot reach Redis at %s (%s): %w", setting, redactURL(cfg.RedisURL), err)
	}
	defer client.Close()
	r := resetter{client: client, slot: cfg.Slot, now: time.Now}
	if err := r.checkStopped(ctx); err != nil {
		if errors.Is(err, errNodeAlive) {
			return fmt.Errorf("cluster reset: %w", err)
		}
		return fmt.Errorf("cluster reset: Redis at %s (%s): %w", setting, redactURL(cfg.RedisURL), err)
	}
	keys, err := r.keys(ctx)
	if err != nil {
		return fmt.Errorf("cluster reset: Redis at %s (%s): %w", setting, redactURL(cfg.RedisURL), err)
	}
	if len(keys) == 0 {
		fmt.Fprintf(stdout, "no keys of cluster %q (%s) in Redis: nothing to delete\n", cfg.Slot, r.pattern())
		return nil
	}
	if !cfg.Yes {
		fmt.Fprintf(stdout, "would delete %d keys of cluster %q:\n", len(keys), cfg.Slot)
		for _, k := range keys {
			fmt.Fprintf(stdout, "  %s\n", k)
		}
		return configErr("--yes", "cluster reset deletes these %d keys of cluster %q for good; add --yes to delete them", len(keys), cfg.Slot)
	}
	deleted, err := r.unlink(ctx, keys)
	for _, k := range deleted {
		fmt.Fprintf(stdout, "deleted %s\n", k)
	}
	if err != nil {
		return fmt.Errorf("cluster reset: deleted %d of %d keys, then: %w", len(deleted), len(keys), err)
	}
	fmt.Fprintf(stdout, "deleted %d keys of cluster %q; start the nodes again\n", len(deleted), cfg.Slot)
	return nil
}

// resetter finds and deletes the keys of one cluster.
type resetter struct {
	client rueidis.Client
	slot   string
	now    func() time.Time
}

// prefix is the literal start of every key of the cluster.
func (r resetter) prefix() string { return "pgrealtime:{" + r.slot + "}:" }

// pattern is the SCAN MATCH pattern of the cluster's keys: the prefix with
// its glob characters escaped, then *.
func (r resetter) pattern() string { return globEscape(r.prefix()) + "*" }

// checkStopped returns an error wrapping errNodeAlive when a node entry was
// written within resetFresh (or in the future: another machine's clock) or
// the leader key exists.
func (r resetter) checkStopped(ctx context.Context) error {
	c := r.client
	leaderKey, nodesKey := cluster.LeaderKey(r.slot), cluster.NodesKey(r.slot)
	leader, err := c.Do(ctx, c.B().Get().Key(leaderKey).Build()).ToString()
	switch {
	case err == nil:
		return fmt.Errorf("%w: node %q leads cluster %q (the leader key %s exists: a leader renews it every second and deletes it when it stops; after a crash it expires within 5s); stop all nodes of this cluster first, then run this again", errNodeAlive, leader, r.slot, leaderKey)
	case !rueidis.IsRedisNil(err):
		return fmt.Errorf("read %s: %w", leaderKey, err)
	}
	// The Registry decides what a fresh entry is; read them through it.
	reg, err := cluster.NewRegistry(cluster.RegistryConfig{Client: c, Slot: r.slot, NodeID: "cluster-reset", Fresh: resetFresh, Now: r.now})
	if err != nil {
		return err
	}
	v, err := reg.View(ctx)
	if err != nil {
		return err
	}
	if len(v.Nodes) > 0 {
		var names []string
		for _, n := range v.Nodes {
			names = append(names, fmt.Sprintf("node %q (%s, seen %s ago)", n.ID, n.Role, r.now().Sub(n.Seen).Round(time.Millisecond)))
		}
		verb := "is"
		if len(names) > 1 {
			verb = "are"
		}
		return fmt.Errorf("%w: %s of cluster %q %s running (entries of %s written within %s); stop all nodes of this cluster first, then run this again", errNodeAlive, strings.Join(names, ", "), r.slot, verb, nodesKey, resetFresh)
	}
	return nil
}

// keys returns the cluster's keys, sorted: SCAN with MATCH on every node
// the client knows (a Redis Cluster keeps them on one node, but SCAN does
// not follow the hash slot), keeping only names that start with the prefix.
func (r resetter) keys(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	prefix, pattern := r.prefix(), r.pattern()
	for addr, node := range r.client.Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(resetScanCount).Build()).AsScanEntry()
			if err != nil {
				return nil, fmt.Errorf("scan %s on %s: %w", pattern, addr, err)
			}
			for _, k := range e.Elements {
				if strings.HasPrefix(k, prefix) { // belt and braces against a pattern mistake
					seen[k] = true
				}
			}
			if e.Cursor == 0 {
				break
			}
			cursor = e.Cursor
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// unlink deletes keys with UNLINK, resetBatch per round trip, and returns
// those Redis deleted (a key that vanished meanwhile is not among them).
func (r resetter) unlink(ctx context.Context, keys []string) ([]string, error) {
	c := r.client
	var deleted []string
	for start := 0; start < len(keys); start += resetBatch {
		batch := keys[start:min(start+resetBatch, len(keys))]
		cmds := make(rueidis.Commands, len(batch))
		for i, k := range batch {
			cmds[i] = c.B().Unlink().Key(k).Build()
		}
		for i, res := range c.DoMulti(ctx, cmds...) {
			n, err := res.AsInt64()
			if err != nil {
				return deleted, fmt.Errorf("unlink %s: %w", batch[i], err)
			}
			if n == 1 {
				deleted = append(deleted, batch[i])
			}
		}
	}
	return deleted, nil
}

// globEscape escapes the characters Redis's glob matching treats specially,
// so that s matches only itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, ch := range s {
		switch ch {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

// redactURL is a Redis URL without its password, for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the URL given"
	}
	return u.Redacted()
}
