package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// Defaults of RegistryConfig.
const (
	// DefaultHeartbeat is how often a node writes its entry (and the leader
	// the leader key).
	DefaultHeartbeat = time.Second
	// DefaultFresh is how long an entry counts in View after it was written.
	DefaultFresh = 5 * time.Second
	// DefaultExpire is the age past which the leader deletes an entry.
	DefaultExpire = time.Minute
	// DefaultLeaderTTL is the expiry of the leader key, renewed every
	// heartbeat while this node leads.
	DefaultLeaderTTL = 5 * time.Second
)

// Roles in a node entry.
const (
	RoleLeader   = "leader"
	RoleFollower = "follower"
)

// seenFormat is RFC 3339 in UTC with milliseconds.
const seenFormat = "2006-01-02T15:04:05.000Z07:00"

// NodesKey is the hash of node entries of the cluster serving slot.
func NodesKey(slot string) string { return "pgrealtime:{" + slot + "}:nodes" }

// LeaderKey is the string naming the leader of the cluster serving slot.
func LeaderKey(slot string) string { return "pgrealtime:{" + slot + "}:leader" }

// RegistryConfig configures a Registry. Client, Slot and NodeID are
// required.
type RegistryConfig struct {
	// Client is the process's one Redis client (cmd builds it).
	Client rueidis.Client
	// Slot names the cluster: its keys are hash-tagged on it.
	Slot   string
	NodeID string
	// Connections counts this node's WebSocket connections (nil: 0).
	Connections func() int
	// IsLeader says whether this node leads now (nil: never).
	IsLeader func() bool
	Logger   zerolog.Logger

	// Heartbeat, Fresh, Expire and LeaderTTL default to the Default…
	// constants; tests shorten them.
	Heartbeat time.Duration
	Fresh     time.Duration
	Expire    time.Duration
	LeaderTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// NodeInfo is one node's entry, as View returns it.
type NodeInfo struct {
	ID          string
	Role        string
	Connections int
	Seen        time.Time
}

// View is the cluster as Redis knows it.
type View struct {
	// Node is this node's id.
	Node string
	// Leader is the leader key's value: "" when no node has renewed it
	// within LeaderTTL.
	Leader string
	// Nodes are the entries seen within Fresh, sorted by id.
	Nodes []NodeInfo
}

// entry is the JSON value of a node's hash field.
type entry struct {
	Role        string `json:"role"`
	Connections int    `json:"connections"`
	Seen        string `json:"seen"`
}

// delIfOurs deletes KEYS[1] only while it holds ARGV[1].
var delIfOurs = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// Registry publishes this node in Redis and reads the cluster's nodes; see
// the package doc.
type Registry struct {
	cfg       RegistryConfig
	log       zerolog.Logger
	nodesKey  string
	leaderKey string

	mu      sync.Mutex
	leading bool // the leader key was last written by this registry

	// ticked, when set (tests), is called after each heartbeat.
	ticked func(err error)
}

// NewRegistry checks cfg and fills its defaults.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("cluster registry: Client is required")
	case cfg.Slot == "":
		return nil, errors.New("cluster registry: Slot is required")
	case cfg.NodeID == "":
		return nil, errors.New("cluster registry: NodeID is required")
	}
	if cfg.Connections == nil {
		cfg.Connections = func() int { return 0 }
	}
	if cfg.IsLeader == nil {
		cfg.IsLeader = func() bool { return false }
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Fresh <= 0 {
		cfg.Fresh = DefaultFresh
	}
	if cfg.Expire <= 0 {
		cfg.Expire = DefaultExpire
	}
	if cfg.LeaderTTL <= 0 {
		cfg.LeaderTTL = DefaultLeaderTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Registry{
		cfg:       cfg,
		log:       cfg.Logger.With().Str(logComponent, "cluster-registry").Str(logNode, cfg.NodeID).Logger(),
		nodesKey:  NodesKey(cfg.Slot),
		leaderKey: LeaderKey(cfg.Slot),
	}, nil
}

// Run writes this node's entry every Heartbeat until ctx ends, then deletes
// the leader key if it still names this node. Redis errors are logged and
// retried at the next heartbeat; Run returns nil when ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	failing := false
	for {
		err := r.beat(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			r.log.Warn().Err(err).Msg("cannot write this node's entry to Redis; retrying every heartbeat")
		case err == nil && failing:
			failing = false
			r.log.Info().Msg("writing this node's entry to Redis again")
		}
		if r.ticked != nil {
			r.ticked(err)
		}
		select {
		case <-ctx.Done():
			r.stop()
			return nil
		case <-t.C:
		}
	}
}

// beat is one heartbeat: the entry, the leader key, the node count and, on
// the leader, the removal of old entries.
func (r *Registry) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout())
	defer cancel()
	leading := r.cfg.IsLeader()
	role := RoleFollower
	if leading {
		role = RoleLeader
	}
	now := r.cfg.Now()
	val, err := json.Marshal(entry{Role: role, Connections: r.cfg.Connections(), Seen: now.UTC().Format(seenFormat)})
	if err != nil {
		return err
	}
	c := r.cfg.Client
	if err := c.Do(ctx, c.B().Hset().Key(r.nodesKey).FieldValue().FieldValue(r.cfg.NodeID, string(val)).Build()).Error(); err != nil {
		return fmt.Errorf("write node entry: %w", err)
	}
	if err := r.leaderKeyBeat(ctx, leading); err != nil {
		return err
	}
	all, err := c.Do(ctx, c.B().Hgetall().Key(r.nodesKey).Build()).AsStrMap()
	if err != nil {
		return fmt.Errorf("read node entries: %w", err)
	}
	fresh, stale := 0, []string(nil)
	for id, v := range all {
		_, seen, ok := parseEntry(v)
		switch {
		case ok && now.Sub(seen) <= r.cfg.Fresh:
			fresh++
		case !ok || now.Sub(seen) > r.cfg.Expire:
			stale = append(stale, id)
		}
	}
	metrics.ClusterNodes.Set(float64(fresh))
	if leading && len(stale) > 0 {
		sort.Strings(stale)
		if err := c.Do(ctx, c.B().Hdel().Key(r.nodesKey).Field(stale...).Build()).Error(); err != nil {
			return fmt.Errorf("delete old node entries: %w", err)
		}
		r.log.Info().Strs("nodes", stale).Dur("older_than", r.cfg.Expire).Msg("deleted old node entries")
	}
	return nil
}

// leaderKeyBeat renews the leader key while leading, and deletes it (if
// still ours) once this node no longer leads.
func (r *Registry) leaderKeyBeat(ctx context.Context, leading bool) error {
	c := r.cfg.Client
	r.mu.Lock()
	defer r.mu.Unlock()
	if leading {
		if err := c.Do(ctx, c.B().Set().Key(r.leaderKey).Value(r.cfg.NodeID).PxMilliseconds(r.cfg.LeaderTTL.Milliseconds()).Build()).Error(); err != nil {
			return fmt.Errorf("write leader key: %w", err)
		}
		r.leading = true
		return nil
	}
	if r.leading {
		if err := delIfOurs.Exec(ctx, c, []string{r.leaderKey}, []string{r.cfg.NodeID}).Error(); err != nil {
			return fmt.Errorf("delete leader key: %w", err)
		}
		r.leading = false
	}
	return nil
}

// stop deletes the leader key if this registry wrote it and it still names
// this node (a graceful stop: the next leader need not wait for its expiry).
func (r *Registry) stop() {
	r.mu.Lock()
	leading := r.leading
	r.leading = false
	r.mu.Unlock()
	if !leading {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opTimeout())
	defer cancel()
	if err := delIfOurs.Exec(ctx, r.cfg.Client, []string{r.leaderKey}, []string{r.cfg.NodeID}).Error(); err != nil {
		r.log.Warn().Err(err).Msg("cannot delete the leader key on stop; it expires by itself")
	}
}

// opTimeout bounds one heartbeat's Redis commands, and the deletion of the
// leader key on stop: a heartbeat, at least 1 s.
func (r *Registry) opTimeout() time.Duration {
	return max(r.cfg.Heartbeat, time.Second)
}

// View reads the leader key and the entries seen within Fresh.
func (r *Registry) View(ctx context.Context) (View, error) {
	c := r.cfg.Client
	v := View{Node: r.cfg.NodeID, Nodes: []NodeInfo{}}
	leader, err := c.Do(ctx, c.B().Get().Key(r.leaderKey).Build()).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return View{}, fmt.Errorf("read leader key: %w", err)
	}
	v.Leader = leader
	all, err := c.Do(ctx, c.B().Hgetall().Key(r.nodesKey).Build()).AsStrMap()
	if err != nil {
		return View{}, fmt.Errorf("read node entries: %w", err)
	}
	now := r.cfg.Now()
	for id, s := range all {
		e, seen, ok := parseEntry(s)
		if !ok || now.Sub(seen) > r.cfg.Fresh {
			continue
		}
		v.Nodes = append(v.Nodes, NodeInfo{ID: id, Role: e.Role, Connections: e.Connections, Seen: seen.UTC()})
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	return v, nil
}

// parseEntry decodes a node entry; ok is false for a value that is not one.
func parseEntry(s string) (e entry, seen time.Time, ok bool) {
	if json.Unmarshal([]byte(s), &e) != nil {
		return entry{}, time.Time{}, false
	}
	seen, err := time.Parse(time.RFC3339Nano, e.Seen)
	return e, seen, err == nil
}
