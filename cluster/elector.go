package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// Defaults of Config.
const (
	DefaultCheckInterval = time.Second
	DefaultCheckTimeout  = 1500 * time.Millisecond
	DefaultReadyGrace    = 5 * time.Second
	DefaultRetryDelay    = 200 * time.Millisecond
	maxRetryDelay        = 5 * time.Second
)

// Log keys.
const (
	logComponent = "component"
	logNode      = "node"
	logSlot      = "slot"
	logHolder    = "holder"
)

var (
	// ErrSessionLost is the cause of a lead context ended because the lock
	// session failed its health check: the lock may already be another
	// node's.
	ErrSessionLost = errors.New("leader lock session lost")
	// ErrNotReady is the cause of a lead context ended because Config.Ready
	// kept failing for ReadyGrace.
	ErrNotReady = errors.New("leader not ready")
	// ErrSteppedDown is the cause seen by lead's context after lead returned.
	ErrSteppedDown = errors.New("leader stepped down")
)

// Config configures an Elector. DatabaseURL, Slot and NodeID are required.
type Config struct {
	// DatabaseURL is the database the replication slot lives in; the lock
	// session connects there.
	DatabaseURL string
	// Slot is the replication slot name; the lock key derives from it, so
	// nodes serving the same slot compete and others do not.
	Slot string
	// NodeID names this node in the lock session's application_name.
	NodeID string
	// CheckInterval and CheckTimeout pace the leader's health check of its
	// lock session (SELECT 1).
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	// Ready, when set, is what the leader needs besides Postgres (Redis in
	// cluster mode). The Elector queues for the lock only after Ready
	// succeeded, cancels its wait when Ready fails, and steps down when
	// Ready has failed for ReadyGrace while leading. Each call gets a
	// CheckTimeout deadline.
	Ready      func(ctx context.Context) error
	ReadyGrace time.Duration
	// RetryDelay is the first pause after a failed or ended term; it
	// doubles on consecutive failures up to 5 s.
	RetryDelay time.Duration
	Logger     zerolog.Logger
}

// Elector runs leader terms for one node; see the package doc.
type Elector struct {
	cfg     Config
	connCfg *pgx.ConnConfig
	key     int64
	log     zerolog.Logger
	leading atomic.Bool

	// checked, when set (tests), is called after each successful health
	// check of the lock session.
	checked func()
}

// New checks cfg and returns an Elector.
func New(cfg Config) (*Elector, error) {
	switch {
	case cfg.DatabaseURL == "":
		return nil, errors.New("cluster: DatabaseURL is empty: set the database the replication slot lives in")
	case cfg.Slot == "":
		return nil, errors.New("cluster: Slot is empty: set the replication slot name the nodes share")
	case cfg.NodeID == "":
		return nil, errors.New("cluster: NodeID is empty: give every node a name")
	}
	connCfg, err := sessionConfig(cfg.DatabaseURL, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	if cfg.ReadyGrace <= 0 {
		cfg.ReadyGrace = DefaultReadyGrace
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = DefaultRetryDelay
	}
	return &Elector{
		cfg:     cfg,
		connCfg: connCfg,
		key:     LockKey(cfg.Slot),
		log:     cfg.Logger.With().Str(logComponent, "cluster").Str(logNode, cfg.NodeID).Str(logSlot, cfg.Slot).Logger(),
	}, nil
}

// Leading reports whether this node holds the lock now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Run competes for the lock until ctx ends and calls lead for each term won
// (see the package doc for when lead's context ends). When lead returns, the
// node steps down and, after RetryDelay, queues again. Run returns nil when
// ctx ends.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	delay := e.cfg.RetryDelay
	for {
		if err := e.waitReady(ctx); err != nil {
			return nil
		}
		led, err := e.term(ctx, lead)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case led:
			delay = e.cfg.RetryDelay
			ev := e.log.Info()
			if err != nil {
				ev = e.log.Warn().Err(err)
			}
			ev.Msg("stepped down")
		default:
			e.log.Warn().Err(err).Dur("retry_in", delay).Msg("leader lock not taken")
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if !led {
			delay = min(2*delay, maxRetryDelay)
		}
	}
}

// term opens a lock session, waits for the lock and leads. led says whether
// the lock was held.
func (e *Elector) term(ctx context.Context, lead func(ctx context.Context) error) (led bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, e.connCfg)
	if err != nil {
		return false, fmt.Errorf("open leader lock session: %w", err)
	}
	defer closeSession(conn)
	if err := e.acquire(ctx, conn); err != nil {
		return false, err
	}

	e.leading.Store(true)
	defer e.leading.Store(false)
	e.log.Info().Uint32("pid", conn.PgConn().PID()).Msg("leading")
	leadCtx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		e.watch(leadCtx, cancel, conn)
	}()
	if e.cfg.Ready != nil {
		go e.watchReady(leadCtx, cancel)
	}
	err = lead(leadCtx)
	cause := context.Cause(leadCtx)
	cancel(ErrSteppedDown)
	<-watched // the session is used by watch until here; closed after
	if err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return true, err
}

// acquire takes the lock, waiting inside Postgres while another session
// holds it. It never ends the holder; it only waits.
func (e *Elector) acquire(ctx context.Context, conn *pgx.Conn) error {
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, e.key).Scan(&got); err != nil {
		return fmt.Errorf("try leader lock: %w", err)
	}
	if got {
		return nil
	}
	var holder *string
	_ = conn.QueryRow(ctx, `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid::int8 = ($1::int8 >> 32) & 4294967295 AND l.objid::int8 = $1::int8 & 4294967295 AND l.objsubid = 1`, e.key).Scan(&holder)
	ev := e.log.Info()
	if holder != nil {
		ev = ev.Str(logHolder, *holder)
	}
	ev.Msg("following: waiting for the leader lock")

	waitCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if e.cfg.Ready != nil {
		go func() {
			t := time.NewTicker(e.cfg.CheckInterval)
			defer t.Stop()
			for {
				select {
				case <-waitCtx.Done():
					return
				case <-t.C:
				}
				if err := e.ready(waitCtx); err != nil && waitCtx.Err() == nil {
					cancel(fmt.Errorf("%w: %w", ErrNotReady, err))
					return
				}
			}
		}()
	}
	if _, err := conn.Exec(waitCtx, `SELECT pg_advisory_lock($1)`, e.key); err != nil {
		if c := context.Cause(waitCtx); c != nil && ctx.Err() == nil {
			return fmt.Errorf("stop waiting for the leader lock: %w", c)
		}
		return fmt.Errorf("wait for leader lock: %w", err)
	}
	return nil
}

// watch checks the lock session every CheckInterval and ends the term the
// moment a check fails.
func (e *Elector) watch(ctx context.Context, cancel context.CancelCauseFunc, conn *pgx.Conn) {
	t := time.NewTicker(e.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, stop := context.WithTimeout(ctx, e.cfg.CheckTimeout)
		_, err := conn.Exec(cctx, "SELECT 1")
		stop()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			e.log.Error().Err(err).Msg("leader lock session lost: stepping down")
			cancel(fmt.Errorf("%w: %w", ErrSessionLost, err))
			return
		}
		if e.checked != nil {
			e.checked()
		}
	}
}

// watchReady ends the term once Ready has failed for ReadyGrace.
func (e *Elector) watchReady(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(e.cfg.CheckInterval)
	defer t.Stop()
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := e.ready(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
			e.log.Warn().Err(err).Msg("leader not ready")
		case time.Since(since) >= e.cfg.ReadyGrace:
			e.log.Error().Err(err).Dur("for", time.Since(since)).Msg("leader not ready: stepping down")
			cancel(fmt.Errorf("%w: %w", ErrNotReady, err))
			return
		}
	}
}

// waitReady returns once Ready succeeds (at once without Ready), or ctx's
// error.
func (e *Elector) waitReady(ctx context.Context) error {
	if e.cfg.Ready == nil {
		return ctx.Err()
	}
	logged := false
	for {
		err := e.ready(ctx)
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		if !logged {
			e.log.Warn().Err(err).Msg("not ready to lead: not queueing for the leader lock")
			logged = true
		}
		t := time.NewTimer(e.cfg.CheckInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (e *Elector) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CheckTimeout)
	defer cancel()
	return e.cfg.Ready(ctx)
}
