//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/cluster"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// resetRedis starts a throwaway Redis and a client to it.
func resetRedis(t *testing.T) (*redistest.Server, rueidis.Client) {
	t.Helper()
	s := redistest.Start(t, redistest.Options{})
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return s, c
}

// seedCluster writes the keys a cluster of slot has in Redis (docs/cluster.md
// section 6), with a node entry last seen at seen. It returns their names.
func seedCluster(ctx context.Context, t *testing.T, c rueidis.Client, slot string, seen time.Time) []string {
	t.Helper()
	p := "pgrealtime:{" + slot + "}:"
	for _, cmd := range []rueidis.Completed{
		c.B().Xadd().Key(p+"stream").Id("1-0").FieldValue().FieldValue("p", "0-0").FieldValue("e", "x").Build(),
		c.B().Set().Key(p + "flushed").Value("0000000000000001").Build(),
		c.B().Set().Key(p + "origin").Value("7300000000000000001/1/app").Build(),
		c.B().Set().Key(p + "format").Value("1").Build(),
	} {
		if err := c.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	writeEntry(ctx, t, c, slot, "web-1", seen)
	keys := []string{p + "flushed", p + "format", p + "nodes", p + "origin", p + "stream"}
	return keys
}

// writeEntry writes node's entry in the format of cluster.Registry.
func writeEntry(ctx context.Context, t *testing.T, c rueidis.Client, slot, node string, seen time.Time) {
	t.Helper()
	entry, _ := json.Marshal(map[string]any{"role": "follower", "connections": 3, "seen": seen.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
	if err := c.Do(ctx, c.B().Hset().Key(cluster.NodesKey(slot)).FieldValue().FieldValue(node, string(entry)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
}

// existing returns which of keys exist.
func existing(ctx context.Context, t *testing.T, c rueidis.Client, keys []string) []string {
	t.Helper()
	var out []string
	for _, k := range keys {
		n, err := c.Do(ctx, c.B().Exists().Key(k).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			out = append(out, k)
		}
	}
	return out
}

// TestClusterResetProcess: the real binary lists without --yes (exit 2,
// nothing deleted) and deletes with it exactly the keys of its slot, a
// stale node entry included; other slots' keys and unrelated keys survive.
func TestClusterResetProcess(t *testing.T) {
	s, c := resetRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	old := time.Now().Add(-2 * resetFresh) // a node that stopped (or died) 10 s ago
	mine := seedCluster(ctx, t, c, "app", old)
	others := append(seedCluster(ctx, t, c, "app2", time.Now()), seedCluster(ctx, t, c, "ap", time.Now())...)
	others = append(others, "pgrealtime:app:format", "pgrealtime:{app}", "xpgrealtime:{app}:format", "unrelated")
	for _, k := range others[len(others)-4:] {
		if err := c.Do(ctx, c.B().Set().Key(k).Value("keep").Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	url := "--redis-url=" + s.URL()

	p := startProc(t, nil, "cluster", "reset", url, "--slot=app")
	if code := p.wait(30 * time.Second); code != 2 {
		t.Fatalf("without --yes: exit %d, want 2; stderr %q", code, p.stderr.String())
	}
	out := p.stdout.String()
	for _, k := range mine {
		if !strings.Contains(out, "  "+k+"\n") {
			t.Errorf("without --yes, stdout does not list %s: %q", k, out)
		}
	}
	if !strings.Contains(out, "would delete 5 keys") || strings.Contains(out, "app2") || strings.Contains(out, "unrelated") {
		t.Errorf("without --yes, stdout %q", out)
	}
	if e := p.stderr.String(); !strings.Contains(e, "pgrealtime: --yes: ") || !strings.Contains(e, "add --yes") {
		t.Errorf("without --yes, stderr %q does not say to add --yes", e)
	}
	if got := existing(ctx, t, c, mine); len(got) != len(mine) {
		t.Fatalf("without --yes, keys were deleted: left %v of %v", got, mine)
	}

	p = startProc(t, []string{"PGREALTIME_SLOT=app"}, "cluster", "reset", url, "--yes")
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("with --yes: exit %d; stderr %q", code, p.stderr.String())
	}
	out = p.stdout.String()
	for _, k := range mine {
		if !strings.Contains(out, "deleted "+k+"\n") {
			t.Errorf("stdout does not report deleting %s: %q", k, out)
		}
	}
	if !strings.Contains(out, `deleted 5 keys of cluster "app"`) {
		t.Errorf("stdout %q", out)
	}
	if got := existing(ctx, t, c, mine); len(got) != 0 {
		t.Errorf("keys of the slot left: %v", got)
	}
	if got := existing(ctx, t, c, others); !slices.Equal(got, others) {
		t.Errorf("other keys deleted: kept %v of %v", got, others)
	}

	// Nothing left: nothing to do, exit 0 even without --yes.
	p = startProc(t, nil, "cluster", "reset", url, "--slot=app")
	if code := p.wait(30 * time.Second); code != 0 || !strings.Contains(p.stdout.String(), "nothing to delete") {
		t.Fatalf("empty cluster: exit %d, stdout %q, stderr %q", code, p.stdout.String(), p.stderr.String())
	}
}

// TestClusterResetRefusesLiveNode: while a real cluster.Registry writes its
// entry (and, leading, the leader key), or while only the leader key exists
// (its node's entry is stale), the binary refuses with exit 1, names the
// node and deletes nothing.
func TestClusterResetRefusesLiveNode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		registry bool // a Registry runs (else the test writes the entry or the key)
		leads    bool
		node     string
	}{
		{"follower entry", true, false, "web-7"},
		{"leader entry and key", true, true, "web-7"},
		{"leader key alone", false, true, "web-9"},
		{"entry seen 1 s ago", false, false, "web-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := resetRedis(t)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			mine := seedCluster(ctx, t, c, "app", time.Now().Add(-2*resetFresh))
			if tc.registry {
				var leading atomic.Bool
				leading.Store(tc.leads)
				reg, err := cluster.NewRegistry(cluster.RegistryConfig{Client: c, Slot: "app", NodeID: tc.node,
					IsLeader: leading.Load, Logger: zerolog.New(zerolog.NewTestWriter(t)), Heartbeat: 100 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				runCtx, stop := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() { defer close(done); _ = reg.Run(runCtx) }()
				defer func() { stop(); <-done }()
				waitNode(ctx, t, reg, tc.node, tc.leads)
			} else if !tc.leads {
				writeEntry(ctx, t, c, "app", tc.node, time.Now().Add(-time.Second))
			} else {
				// As the Registry writes it (SET … PX), with an expiry a busy
				// machine cannot outlast.
				if err := c.Do(ctx, c.B().Set().Key(cluster.LeaderKey("app")).Value(tc.node).PxMilliseconds(30_000).Build()).Error(); err != nil {
					t.Fatal(err)
				}
			}
			n, err := c.Do(ctx, c.B().Exists().Key(cluster.LeaderKey("app")).Build()).AsInt64()
			if err != nil || (n == 1) != tc.leads {
				t.Fatalf("leader key exists: %d, %v; want %v", n, err, tc.leads)
			}

			p := startProc(t, nil, "cluster", "reset", "--redis-url="+s.URL(), "--slot=app", "--yes")
			if code := p.wait(30 * time.Second); code != 1 {
				t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, p.stdout.String(), p.stderr.String())
			}
			e := p.stderr.String()
			for _, w := range []string{"pgrealtime: cluster reset: ", `node "` + tc.node + `"`, "stop all nodes of this cluster first"} {
				if !strings.Contains(e, w) {
					t.Errorf("stderr %q does not say %q", e, w)
				}
			}
			if p.stdout.String() != "" {
				t.Errorf("stdout %q", p.stdout.String())
			}
			if got := existing(ctx, t, c, mine); len(got) != len(mine) {
				t.Fatalf("refused, yet keys were deleted: left %v of %v", got, mine)
			}
		})
	}
}

// waitNode waits until reg's view shows id (as leader when leads).
func waitNode(ctx context.Context, t *testing.T, reg *cluster.Registry, id string, leads bool) {
	t.Helper()
	for {
		v, err := reg.View(ctx)
		if err == nil && len(v.Nodes) == 1 && v.Nodes[0].ID == id && (v.Leader == id) == leads {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s never showed up: %+v, %v", id, v, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestClusterResetGlobCharactersLiteral: a slot name with glob characters
// matches only itself. (--slot accepts only [a-z0-9_], so this runs the
// resetter directly: the escaping keeps holding if that rule is relaxed.)
func TestClusterResetGlobCharactersLiteral(t *testing.T) {
	_, c := resetRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	slots := []string{"a*", "a?", "a[bc]", "a\\b", "ab", "abc", "a]", "a"}
	for _, slot := range slots {
		if err := c.Do(ctx, c.B().Set().Key("pgrealtime:{"+slot+"}:format").Value("1").Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	for _, slot := range slots {
		r := resetter{client: c, slot: slot, now: time.Now}
		keys, err := r.keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"pgrealtime:{" + slot + "}:format"}
		if !slices.Equal(keys, want) {
			t.Errorf("slot %q (pattern %q): keys %q, want %q", slot, r.pattern(), keys, want)
		}
	}
	// Deleting one leaves the others.
	r := resetter{client: c, slot: "a*", now: time.Now}
	deleted, err := r.unlink(ctx, []string{"pgrealtime:{a*}:format"})
	if err != nil || !slices.Equal(deleted, []string{"pgrealtime:{a*}:format"}) {
		t.Fatalf("unlink: %q, %v", deleted, err)
	}
	for _, slot := range slots[1:] {
		if got := existing(ctx, t, c, []string{"pgrealtime:{" + slot + "}:format"}); len(got) != 1 {
			t.Errorf("key of slot %q deleted", slot)
		}
	}
}

// TestClusterResetManyKeys: more keys than one SCAN page and one UNLINK
// batch are all found and deleted.
func TestClusterResetManyKeys(t *testing.T) {
	_, c := resetRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 2500
	var cmds rueidis.Commands
	for i := 0; i < n; i++ {
		k := "pgrealtime:{big}:k" + strconv.Itoa(i)
		cmds = append(cmds, c.B().Set().Key(k).Value("1").Build(), c.B().Set().Key("pgrealtime:{big2}:k"+strconv.Itoa(i)).Value("1").Build())
	}
	for _, res := range c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			t.Fatal(err)
		}
	}
	r := resetter{client: c, slot: "big", now: time.Now}
	keys, err := r.keys(ctx)
	if err != nil || len(keys) != n {
		t.Fatalf("keys: %d, %v; want %d", len(keys), err, n)
	}
	deleted, err := r.unlink(ctx, keys)
	if err != nil || len(deleted) != n {
		t.Fatalf("deleted %d, %v; want %d", len(deleted), err, n)
	}
	size, err := c.Do(ctx, c.B().Dbsize().Build()).AsInt64()
	if err != nil || size != n {
		t.Fatalf("dbsize %d, %v; want the other slot's %d", size, err, n)
	}
}

// TestClusterResetErrors: Redis unreachable → exit 1 naming --redis-url
// (without its password); no --redis-url or a bad --slot → exit 2.
func TestClusterResetErrors(t *testing.T) {
	addr := freeAddr(t) // nothing listens there
	p := startProc(t, nil, "cluster", "reset", "--redis-url=redis://u:hunter2@"+addr+"/0", "--yes")
	if code := p.wait(30 * time.Second); code != 1 {
		t.Fatalf("unreachable: exit %d, want 1; stderr %q", code, p.stderr.String())
	}
	e := p.stderr.String()
	if !strings.HasPrefix(e, "pgrealtime: cluster reset: cannot reach Redis at --redis-url") || strings.Count(e, "\n") != 1 || strings.Contains(e, "hunter2") {
		t.Errorf("unreachable: stderr %q", e)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"reset", "--yes"}, "--redis-url: required"},
		{[]string{"reset", "--redis-url=http://h:1"}, `--redis-url: unsupported scheme "http"`},
		{[]string{"reset", "--redis-url=redis://h:1/0", "--slot=a*"}, "--slot: must contain only lower-case letters"},
		{[]string{"reset", "--database-url=x"}, "--database-url: unknown flag for `pgrealtime cluster reset`"},
		{[]string{"bogus"}, `unknown cluster command "bogus"`},
		{nil, "missing cluster command"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"cluster"}, tc.args...), envOf(), &out, &errOut)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cluster %q: %v, want a config error with %q", tc.args, err, tc.want)
		}
	}
}

// TestClusterResetHelp: the main help and `cluster --help` name the command,
// `cluster reset --help` its flags.
func TestClusterResetHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"help"}, []string{"pgrealtime cluster reset", "needs --yes"}},
		{[]string{"cluster", "--help"}, []string{"reset", "pgrealtime:{<slot>}:*", "refused while one of its nodes runs"}},
		{[]string{"cluster", "reset", "--help"}, []string{"Usage: pgrealtime cluster reset", "--redis-url", "--slot", "--yes"}},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), tc.args, envOf(), &out, &out); err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%q: output does not mention %q:\n%s", tc.args, w, out.String())
			}
		}
	}
}
