package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker/redisbroker"
	"github.com/pgrealtime/pgrealtime/cdc"
	"github.com/pgrealtime/pgrealtime/cluster"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// stepDownTimeout bounds a leader's graceful hand-over at shutdown: the
// reader's final acknowledgement and the lock session's close.
const stepDownTimeout = 1500 * time.Millisecond

// slotBusyRetry is how often a leader retries a slot another walsender
// holds (docs/cluster.md section 8).
const slotBusyRetry = 200 * time.Millisecond

// buildClusterPipeline wires cluster mode (PROTOCOL section 8,
// docs/cluster.md): every node follows the Redis stream and serves
// WebSockets; the node that wins the election runs the WAL reader, which
// appends to Redis.
func buildClusterPipeline(ctx context.Context, cfg *Config, set *rules.Set, verifier *auth.Verifier, log zerolog.Logger) (*pipeline, error) {
	client, err := dialRedis(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	rb, err := redisbroker.New(redisbroker.Config{
		Client: client, Slot: cfg.Slot, HistorySize: cfg.HistorySize, Prepare: set.Prepare, Logger: log,
	})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("redis broker: %w", err)
	}
	var leading atomic.Bool
	var s *wsapi.Server
	reg, err := cluster.NewRegistry(cluster.RegistryConfig{
		Client: client, Slot: cfg.Slot, NodeID: cfg.NodeID, IsLeader: leading.Load, Logger: log,
		Connections: func() int {
			if s == nil {
				return 0
			}
			return int(s.Connections())
		},
	})
	if err != nil {
		rb.Close()
		client.Close()
		return nil, fmt.Errorf("cluster registry: %w", err)
	}
	el, err := cluster.New(cluster.Config{
		DatabaseURL: cfg.DatabaseURL, Slot: cfg.Slot, NodeID: cfg.NodeID, Logger: log,
		Ready: func(ctx context.Context) error { return client.Do(ctx, client.B().Ping().Build()).Error() },
	})
	if err != nil {
		rb.Close()
		client.Close()
		return nil, configErr("", "%v", err)
	}
	readerCfg := cdc.Config{
		ConnString:    cfg.DatabaseURL,
		Publication:   cfg.Publication,
		Slot:          cfg.Slot,
		NotifyChannel: cfg.NotifyChannel,
		Publisher:     rb,
		Live:          rb,
		Logger:        log,
		BatchWindow:   batchWindow(cfg.BatchWindow),
		// A new leader whose START_REPLICATION finds the old leader's
		// walsender still on the slot retries every 200 ms, not with the
		// backoff (docs/cluster.md section 8).
		SlotBusyRetry: slotBusyRetry,
	}
	// Check the reader's settings once, before any term.
	if _, err := cdc.NewReader(readerCfg); err != nil {
		rb.Close()
		client.Close()
		return nil, fmt.Errorf("wal reader: %w", err)
	}
	ready := func() (bool, string) {
		if err := rb.Ready(); err != nil {
			return false, err.Error()
		}
		return true, ""
	}
	sc := serverConfig(cfg, set, verifier, log)
	sc.Broker, sc.Ready = rb, ready
	sc.Cluster = clusterInfo{registry: reg, nodeID: cfg.NodeID, leading: leading.Load}
	s, err = wsapi.New(sc)
	if err != nil {
		rb.Close()
		client.Close()
		return nil, configErr("", "%v", err)
	}
	lead := func(ctx context.Context) error {
		leading.Store(true)
		metrics.SetClusterLeader(true)
		defer func() {
			rb.End() // this node no longer appends: its follower reads the stream
			leading.Store(false)
			metrics.SetClusterLeader(false)
		}()
		rb.SetOrigin(postgresOrigin(ctx, cfg.DatabaseURL, log))
		r, err := cdc.NewReader(readerCfg)
		if err != nil {
			return err
		}
		return r.Run(ctx)
	}
	c := &clusterRun{rb: rb, reg: reg, el: el, lead: lead, log: log}
	return &pipeline{
		handler: s.Handler(), run: c.run, stepDown: c.stepDown, shutdown: s.Shutdown,
		close: func() error {
			err := rb.Close()
			client.Close()
			return err
		},
		connections: s.Connections,
	}, nil
}

// clusterRun runs a node's three loops: the Redis follower, the registry
// heartbeat and the election (whose terms run the WAL reader).
type clusterRun struct {
	rb   *redisbroker.Broker
	reg  *cluster.Registry
	el   *cluster.Elector
	lead func(ctx context.Context) error
	log  zerolog.Logger

	mu        sync.Mutex
	stopElect context.CancelFunc
	elected   chan struct{}
}

func (c *clusterRun) run(ctx context.Context) error {
	ectx, stop := context.WithCancel(ctx)
	c.mu.Lock()
	c.stopElect, c.elected = stop, make(chan struct{})
	elected := c.elected
	c.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(3)
	go func() { defer wg.Done(); errs <- c.rb.Run(ctx) }()
	go func() { defer wg.Done(); errs <- c.reg.Run(ctx) }()
	go func() { defer wg.Done(); defer close(elected); _ = c.el.Run(ectx, c.lead) }()
	var first error
	select {
	case <-ctx.Done():
	case err := <-errs:
		if ctx.Err() == nil {
			first = err
			if first == nil {
				first = errors.New("cluster loop stopped unexpectedly")
			}
		}
	}
	stop()
	wg.Wait()
	return first
}

// stepDown ends this node's leadership (if any) and its candidacy, so that
// another node takes over at once; the follower keeps serving until the
// pipeline stops.
func (c *clusterRun) stepDown() {
	c.mu.Lock()
	stop, elected := c.stopElect, c.elected
	c.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	select {
	case <-elected:
	case <-time.After(stepDownTimeout):
		c.log.Warn().Msg("leader did not step down in time")
	}
}

// dialRedis connects to --redis-url, retrying until ctx ends: a node that
// starts before Redis waits for it rather than exiting.
func dialRedis(ctx context.Context, cfg *Config, log zerolog.Logger) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, configErr(cfg.Source("redis-url"), "%v", err)
	}
	opt.DisableCache = true
	delay := 200 * time.Millisecond
	for {
		c, err := rueidis.NewClient(opt)
		if err == nil {
			return c, nil
		}
		log.Error().Err(err).Str("redis", redactedURL(cfg.RedisURL)).Dur("retry_in", delay).Msg("cannot reach Redis (--redis-url); retrying")
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("redis (--redis-url): %w", err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// postgresOrigin names the database the leader reads
// ("<system_identifier>/<timeline>/<database>"), so that a stream written
// from another database (or a restored backup) is not continued silently.
// "" (no check) when the role may not read the control data.
func postgresOrigin(ctx context.Context, url string, log zerolog.Logger) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		log.Warn().Err(err).Msg("cannot read the database's identity; the stream's origin is not checked this term")
		return ""
	}
	defer conn.Close(context.Background())
	var origin string
	err = conn.QueryRow(ctx, `SELECT s.system_identifier::text || '/' || c.timeline_id::text || '/' || current_database()
		FROM pg_control_system() s, pg_control_checkpoint() c`).Scan(&origin)
	if err != nil {
		log.Warn().Err(err).Msg("cannot read the database's identity (pg_control_system); the stream's origin is not checked this term")
		return ""
	}
	return origin
}

// redactedURL is u without its password, for logs.
func redactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable --redis-url)"
	}
	return p.Redacted()
}
