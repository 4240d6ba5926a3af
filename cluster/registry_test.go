package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

func redisClient(t *testing.T, s *redistest.Server) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// regNode is one Registry.Run in the test process.
type regNode struct {
	r       *Registry
	leading atomic.Bool
	conns   atomic.Int64
	ticks   chan error
	cancel  context.CancelFunc
	done    chan struct{}
}

func newRegNode(t *testing.T, c rueidis.Client, slot, id string, edit func(*RegistryConfig)) *regNode {
	t.Helper()
	n := &regNode{ticks: make(chan error, 1024), done: make(chan struct{})}
	cfg := RegistryConfig{Client: c, Slot: slot, NodeID: id,
		Connections: func() int { return int(n.conns.Load()) },
		IsLeader:    n.leading.Load,
		Logger:      zerolog.New(zerolog.NewTestWriter(t)),
		Heartbeat:   50 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	r, err := NewRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.ticked = func(err error) {
		select {
		case n.ticks <- err:
		default:
		}
	}
	n.r = r
	return n
}

func (n *regNode) start(t *testing.T) *regNode {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		_ = n.r.Run(ctx)
	}()
	t.Cleanup(n.stop)
	return n
}

func (n *regNode) stop() {
	n.cancel()
	<-n.done
}

// waitTicks waits for k more heartbeats, successful or not.
func (n *regNode) waitTicks(t *testing.T, k int) {
	t.Helper()
	for i := 0; i < k; i++ {
		select {
		case <-n.ticks:
		case <-time.After(30 * time.Second):
			t.Fatal("no heartbeat within 30 s")
		}
	}
}

func view(t *testing.T, r *Registry) View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := r.View(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func ids(v View) string {
	s := ""
	for _, n := range v.Nodes {
		s += fmt.Sprintf("%s/%s/%d ", n.ID, n.Role, n.Connections)
	}
	return s
}

func gauge(t *testing.T, g interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func TestRegistryTwoNodesSeeEachOther(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	a := newRegNode(t, c, "slot_a", "node-a", nil)
	b := newRegNode(t, c, "slot_a", "node-b", nil)
	other := newRegNode(t, c, "slot_other", "node-x", nil) // another cluster on the same Redis
	a.conns.Store(3)
	b.conns.Store(7)
	b.leading.Store(true)
	a.start(t)
	b.start(t)
	other.start(t)
	want := "node-a/follower/3 node-b/leader/7 "
	waitUntil(t, 30*time.Second, "both nodes in each view", func() bool {
		return ids(view(t, a.r)) == want && ids(view(t, b.r)) == want
	})
	v := view(t, a.r)
	if v.Node != "node-a" || v.Leader != "node-b" {
		t.Fatalf("view %+v: want node node-a, leader node-b", v)
	}
	for _, n := range v.Nodes {
		if age := time.Since(n.Seen); age < -time.Second || age > DefaultFresh || n.Seen.Location() != time.UTC {
			t.Errorf("%s seen %v (age %v)", n.ID, n.Seen, age)
		}
	}
	if got := ids(view(t, other.r)); got != "node-x/follower/0 " {
		t.Fatalf("the other slot's cluster sees %q", got)
	}
	a.waitTicks(t, 2)
	if got := gauge(t, metrics.ClusterNodes); got < 1 {
		t.Errorf("pgrealtime_cluster_nodes = %v", got)
	}
}

// TestRegistryNodesGauge: pgrealtime_cluster_nodes counts the fresh entries
// of this node's cluster.
func TestRegistryNodesGauge(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	a := newRegNode(t, c, "slot_g", "node-a", nil).start(t)
	newRegNode(t, c, "slot_g", "node-b", nil).start(t)
	waitUntil(t, 30*time.Second, "two nodes", func() bool { return len(view(t, a.r).Nodes) == 2 })
	a.waitTicks(t, 2) // a heartbeat that began after both entries existed
	if got := gauge(t, metrics.ClusterNodes); got != 2 {
		t.Fatalf("pgrealtime_cluster_nodes = %v, want 2", got)
	}
}

// TestRegistryStoppedNodeDisappears: a node that no longer writes its entry
// leaves the view once the entry is older than Fresh (shortened here).
func TestRegistryStoppedNodeDisappears(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	short := func(cfg *RegistryConfig) { cfg.Fresh = 500 * time.Millisecond }
	a := newRegNode(t, c, "slot_s", "node-a", short).start(t)
	b := newRegNode(t, c, "slot_s", "node-b", short).start(t)
	waitUntil(t, 30*time.Second, "both nodes", func() bool { return len(view(t, a.r).Nodes) == 2 })
	b.stop()
	stopped := time.Now()
	waitUntil(t, 30*time.Second, "node-b gone", func() bool { return ids(view(t, a.r)) == "node-a/follower/0 " })
	if d := time.Since(stopped); d < 400*time.Millisecond {
		t.Fatalf("node-b left the view %v after it stopped, before its entry was 500 ms old", d)
	}
}

// TestRegistryFreshWindow: with the defaults, View keeps an entry seen 4.9 s
// ago and drops one seen 5.1 s ago (a fixed clock, no waiting).
func TestRegistryFreshWindow(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	r, err := NewRegistry(RegistryConfig{Client: c, Slot: "slot_f", NodeID: "me", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	put := func(id string, age time.Duration) {
		b, _ := json.Marshal(entry{Role: RoleFollower, Connections: 1, Seen: now.Add(-age).Format(seenFormat)})
		if err := c.Do(context.Background(), c.B().Hset().Key(NodesKey("slot_f")).FieldValue().FieldValue(id, string(b)).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	put("fresh", 4900*time.Millisecond)
	put("old", 5100*time.Millisecond)
	put("future", -2*time.Second) // a node whose clock is ahead counts
	if got := ids(view(t, r)); got != "fresh/follower/1 future/follower/1 " {
		t.Fatalf("view %q", got)
	}
}

func leaderKey(t *testing.T, c rueidis.Client, slot string) (string, time.Duration) {
	t.Helper()
	ctx := context.Background()
	v, err := c.Do(ctx, c.B().Get().Key(LeaderKey(slot)).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", 0
	}
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := c.Do(ctx, c.B().Pttl().Key(LeaderKey(slot)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return v, time.Duration(ttl) * time.Millisecond
}

// TestRegistryLeaderKey: set with a 5 s expiry while IsLeader, deleted when
// the node stops leading and on a graceful stop.
func TestRegistryLeaderKey(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	a := newRegNode(t, c, "slot_l", "node-a", nil)
	a.leading.Store(true)
	a.start(t)
	waitUntil(t, 30*time.Second, "leader key = node-a", func() bool { v, _ := leaderKey(t, c, "slot_l"); return v == "node-a" })
	if _, ttl := leaderKey(t, c, "slot_l"); ttl <= 0 || ttl > DefaultLeaderTTL {
		t.Fatalf("leader key expires in %v, want within %v", ttl, DefaultLeaderTTL)
	}
	a.leading.Store(false)
	waitUntil(t, 30*time.Second, "leader key deleted after stepping down", func() bool { v, _ := leaderKey(t, c, "slot_l"); return v == "" })
	a.leading.Store(true)
	waitUntil(t, 30*time.Second, "leader key = node-a again", func() bool { v, _ := leaderKey(t, c, "slot_l"); return v == "node-a" })
	if v := view(t, a.r); v.Leader != "node-a" {
		t.Fatalf("view leader %q", v.Leader)
	}
	a.stop()
	if v, _ := leaderKey(t, c, "slot_l"); v != "" {
		t.Fatalf("leader key %q after a graceful stop", v)
	}
}

// TestRegistryStopKeepsOthersLeaderKey: a stopping node deletes the leader
// key only while it names that node.
func TestRegistryStopKeepsOthersLeaderKey(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	// One heartbeat only (the first), so that the test's SET stays.
	a := newRegNode(t, c, "slot_o", "node-a", func(cfg *RegistryConfig) { cfg.Heartbeat = time.Hour })
	a.leading.Store(true)
	a.start(t)
	a.waitTicks(t, 1)
	if v, _ := leaderKey(t, c, "slot_o"); v != "node-a" {
		t.Fatalf("leader key %q", v)
	}
	if err := c.Do(context.Background(), c.B().Set().Key(LeaderKey("slot_o")).Value("node-b").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	a.stop()
	if v, _ := leaderKey(t, c, "slot_o"); v != "node-b" {
		t.Fatalf("leader key %q after node-a stopped, want node-b's", v)
	}
}

// TestRegistryLeaderDeletesOldEntries: only the leader deletes entries
// older than Expire (and values that are not entries); a follower leaves
// them.
func TestRegistryLeaderDeletesOldEntries(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	ctx := context.Background()
	now := time.Now()
	put := func(id, val string) {
		if err := c.Do(ctx, c.B().Hset().Key(NodesKey("slot_d")).FieldValue().FieldValue(id, val).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	at := func(age time.Duration) string {
		b, _ := json.Marshal(entry{Role: RoleFollower, Seen: now.Add(-age).UTC().Format(seenFormat)})
		return string(b)
	}
	put("ghost", at(2*time.Minute))
	put("recent", at(30*time.Second))
	put("junk", "not json")
	fields := func() map[string]string {
		m, err := c.Do(ctx, c.B().Hgetall().Key(NodesKey("slot_d")).Build()).AsStrMap()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	f := newRegNode(t, c, "slot_d", "follower", nil).start(t)
	f.waitTicks(t, 3)
	if m := fields(); m["ghost"] == "" || m["junk"] == "" {
		t.Fatalf("a follower deleted entries: %v", m)
	}
	if got := ids(view(t, f.r)); got != "follower/follower/0 " {
		t.Fatalf("view %q: old and recent-but-stale entries must not show", got)
	}
	l := newRegNode(t, c, "slot_d", "leader", nil)
	l.leading.Store(true)
	l.start(t)
	waitUntil(t, 30*time.Second, "ghost and junk deleted", func() bool {
		m := fields()
		return m["ghost"] == "" && m["junk"] == ""
	})
	if m := fields(); m["recent"] == "" || m["follower"] == "" || m["leader"] == "" {
		t.Fatalf("the leader deleted too much: %v", m)
	}
}

// TestRegistryRedisDown: while Redis is down Run keeps going (and retrying)
// and View returns an error; when Redis is back the entry is written again.
func TestRegistryRedisDown(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := redisClient(t, s)
	a := newRegNode(t, c, "slot_r", "node-a", nil).start(t)
	waitUntil(t, 30*time.Second, "node-a in view", func() bool { return len(view(t, a.r).Nodes) == 1 })
	s.Stop() // without persistence: the entry is gone with the data
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := a.r.View(ctx)
	cancel()
	if err == nil {
		t.Fatal("View answered while Redis is down")
	}
	// Failed heartbeats, and Run still running.
	deadline := time.After(30 * time.Second)
	for failed := 0; failed < 2; {
		select {
		case err := <-a.ticks:
			if err != nil {
				failed++
			}
		case <-a.done:
			t.Fatal("Run returned while Redis was down")
		case <-deadline:
			t.Fatal("no failed heartbeat within 30 s")
		}
	}
	s.Restart()
	waitUntil(t, 30*time.Second, "node-a in view again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v, err := a.r.View(ctx)
		return err == nil && ids(v) == "node-a/follower/0 "
	})
}
