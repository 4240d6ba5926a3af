package cdc

// A dead path to Postgres: a TCP path that stops carrying packets without
// closing (a NAT or firewall that dropped its state, a failed-over host)
// leaves both ends waiting. This file holds how the reader notices it (a
// reply it asked for does not come) and how it gets its slot back (Postgres
// keeps the old walsender, and with it the slot, until wal_sender_timeout).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultServerTimeout is the default Config.ServerTimeout.
const DefaultServerTimeout = 4 * time.Second

// DefaultConnectTimeout bounds each connection attempt when the database URL
// sets no connect_timeout: a connection attempt on a dead path would
// otherwise wait for the operating system's TCP timeout (minutes).
const DefaultConnectTimeout = 10 * time.Second

const (
	// pathCheckTimeout bounds the query that tells a busy walsender from a
	// dead path.
	pathCheckTimeout = 2 * time.Second
	// releaseTimeout bounds the wait for a terminated walsender to let go
	// of the slot.
	releaseTimeout = 10 * time.Second
	// maxAppName is the longest application_name Postgres keeps
	// (NAMEDATALEN - 1); longer ones are truncated.
	maxAppName = 63
)

// ErrDeadPath is wrapped by the error that ends a replication session when
// Postgres stopped answering on it (Run then reconnects).
var ErrDeadPath = errors.New("no answer from Postgres on the replication connection")

// ErrSlotInUse is wrapped by the error that ends a replication session when
// another process holds the slot (Run retries with backoff).
var ErrSlotInUse = errors.New("replication slot in use by another process")

// newRunID returns a random identifier for this reader: it goes into the
// replication connection's application_name, so that a walsender left by an
// earlier connection of this same reader can be told from any other.
func newRunID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// replAppName is the application_name of the replication connection: the
// configured one (or "pgrealtime"), then "/" and the run id, shortened so
// that Postgres keeps the id whole. Bytes other than printable ASCII become
// "_": Postgres would rewrite them (differently across versions), and the
// name must read back exactly as sent.
func replAppName(base, runID string) string {
	if base == "" {
		base = "pgrealtime"
	}
	b := []byte(base)
	for i, c := range b {
		if c < 32 || c > 126 {
			b[i] = '_'
		}
	}
	base = string(b)
	suffix := "/" + runID
	if len(base) > maxAppName-len(suffix) {
		base = base[:maxAppName-len(suffix)]
	}
	return base + suffix
}

// connectTimeout applies DefaultConnectTimeout when the URL set none.
func connectTimeout(cfg *pgconn.Config) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
}

// takeSlot runs before START_REPLICATION. When the slot is held by a
// walsender whose application_name carries this reader's run id, that
// walsender serves an earlier connection of this same reader, which is dead
// (the reader holds one replication connection at a time, and the current
// one has not started streaming): takeSlot ends it with pg_terminate_backend
// and waits until the slot is free. A slot held by anything else (another
// pgrealtime, pg_recvlogical, a subscriber) is never touched: takeSlot
// returns an error wrapping ErrSlotInUse that says who holds it, and Run
// retries with backoff, as for any other start failure.
//
// The same rule holds in cluster mode (docs/cluster.md section 8, "Which
// rule for a slot holder"): a node, leader or not, never ends another
// node's walsender; it waits for it (Run retries on ErrSlotInUse, and
// START_REPLICATION's SQLSTATE 55006 is the same error). Holding the
// leader lock does not prove the old leader's walsender dead: the lock
// lives on one session and the walsender on another, and they end at
// different times (after a network loss the lock session ends after about
// 4–5 s, the walsender only after wal_sender_timeout; an operator's
// pg_terminate_backend of the lock session frees the lock while the old
// leader still streams). Ending that walsender would cut a live leader
// mid-batch; waiting costs at most wal_sender_timeout, and the slot already
// makes a second reader impossible. So takeSlot checks no leader lock, and
// must not: only this process's own dead connections are ended, as above.
func (r *Reader) takeSlot(ctx context.Context, conn *pgx.Conn, ownPID uint32) error {
	var (
		pid *int64
		app *string
	)
	err := conn.QueryRow(ctx, `SELECT s.active_pid::int8, a.application_name
		FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1`, r.cfg.Slot).Scan(&pid, &app)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil // dropped meanwhile: START_REPLICATION says so
	case err != nil:
		return fmt.Errorf("look up replication slot holder: %w", err)
	case pid == nil || *pid == int64(ownPID):
		return nil
	}
	holder := ""
	if app != nil {
		holder = *app
	}
	if holder != r.appName {
		return &slotInUseError{slot: r.cfg.Slot, pid: *pid, app: holder}
	}
	var ended bool
	if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1::int)`, *pid).Scan(&ended); err != nil {
		return fmt.Errorf("end this process's own dead replication connection (pid %d) holding slot %s: %w", *pid, r.cfg.Slot, err)
	}
	r.log.Warn().Str(logSlot, r.cfg.Slot).Int64("pid", *pid).Str("application_name", holder).Bool("signalled", ended).
		Msg("ended this process's own previous replication connection, dead but still holding the slot")
	wctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	for {
		var still bool
		err := conn.QueryRow(wctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active_pid = $2)`, r.cfg.Slot, *pid).Scan(&still)
		if err != nil {
			return fmt.Errorf("wait for replication slot %s to be released by pid %d: %w", r.cfg.Slot, *pid, err)
		}
		if !still {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("replication slot %s still held by pid %d %v after pg_terminate_backend", r.cfg.Slot, *pid, releaseTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type slotInUseError struct {
	slot string
	pid  int64
	app  string
}

func (e *slotInUseError) Error() string {
	who := "application_name " + fmt.Sprintf("%q", e.app)
	if e.app == "" {
		who = "no application_name"
	}
	return fmt.Sprintf("replication slot %s is in use by another process (pid %d, %s), which is left alone: "+
		"stop that consumer, or give this pgrealtime its own --slot; retrying until the slot is free", e.slot, e.pid, who)
}

func (e *slotInUseError) Unwrap() error { return ErrSlotInUse }

// startError explains START_REPLICATION refused because the slot became
// active between takeSlot and the start.
func startError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" {
		return fmt.Errorf("start replication: %w: %w", ErrSlotInUse, err)
	}
	return fmt.Errorf("start replication: %w", err)
}

// checkPath runs when Postgres has not answered a reply request on the
// replication connection for ServerTimeout. A walsender busy decoding a
// large transaction may answer late without anything being wrong, so the
// reader asks, over its regular connection, what the walsender (pid) is
// doing. It returns an error wrapping ErrDeadPath when the path is dead:
// the regular connection does not answer in time either, the walsender is
// gone, or it is waiting for the network or for WAL (it would have
// answered had the request reached it, or its answer reached the reader).
// It returns nil when the walsender is busy: the reader waits longer.
func (r *Reader) checkPath(ctx context.Context, conn *pgx.Conn, pid uint32, silent time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, pathCheckTimeout)
	defer cancel()
	var waitEvent *string
	err := conn.QueryRow(cctx, `SELECT wait_event FROM pg_stat_activity WHERE pid = $1`, int64(pid)).Scan(&waitEvent)
	switch {
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%w for %v: its walsender (pid %d) is gone", ErrDeadPath, silent.Round(time.Millisecond), pid)
	case err != nil:
		return fmt.Errorf("%w for %v, nor on the regular connection (%v): the network path to Postgres is dead", ErrDeadPath, silent.Round(time.Millisecond), err)
	}
	switch strings.ToLower(deref(waitEvent)) {
	case "walsendermain", "walsenderwaitforwal", "walsenderwritedata":
		return fmt.Errorf("%w for %v while its walsender (pid %d) waits (%s): the path of the replication connection is dead", ErrDeadPath, silent.Round(time.Millisecond), pid, deref(waitEvent))
	}
	r.log.Debug().Uint32("pid", pid).Str("wait_event", deref(waitEvent)).Dur("silent", silent).Msg("walsender busy; waiting for its answer")
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// tickLiveness runs at each status tick, before the standby status is
// sent: it notes whether Postgres said anything since the last tick, and
// asks for an immediate reply (in this tick's status) when it did not.
func (r *Reader) tickLiveness(now time.Time) {
	if r.heard {
		r.heard, r.lastHeard, r.askedAt = false, now, time.Time{}
	}
	r.askReply = r.cfg.ServerTimeout > 0 && now.Sub(r.lastHeard) >= r.cfg.StatusInterval
}

// checkSilence runs when a read found nothing until the status tick. When a
// reply request has gone unanswered for ServerTimeout, it checks the path
// (checkPath) and returns its error, after which the session ends.
func (r *Reader) checkSilence(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) error {
	if r.heard || r.askedAt.IsZero() || time.Since(r.askedAt) < r.cfg.ServerTimeout {
		return nil
	}
	if err := r.checkPath(ctx, conn, repl.PID(), time.Since(r.lastHeard)); err != nil {
		return err
	}
	r.askedAt = time.Now() // busy: check again after another ServerTimeout
	return nil
}
