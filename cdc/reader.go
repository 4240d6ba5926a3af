package cdc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// Defaults of Config.
const (
	DefaultPublication       = "pgrealtime"
	DefaultSlot              = "pgrealtime"
	DefaultNotifyChannel     = "pgrealtime"
	DefaultStatusInterval    = time.Second
	DefaultSyncInterval      = 30 * time.Second
	DefaultSyncNoTrigger     = 2 * time.Second
	DefaultSlotStatsInterval = 10 * time.Second
	DefaultMinBackoff        = 100 * time.Millisecond
	DefaultMaxBackoff        = 5 * time.Second
)

// Log keys.
const (
	logComponent = "component"
	logLSN       = "lsn"
	logSlot      = "slot"
	logAttempt   = "attempt"
	logBackoff   = "backoff"
)

// Config configures a Reader. Zero fields take the Default… values.
type Config struct {
	// ConnString is a libpq URL or DSN for a regular connection; the reader
	// adds replication=database for its replication connection itself.
	ConnString string
	// Publication names the (managed) publication; the reader also streams
	// <Publication>_insert_only when it exists.
	Publication string
	// Slot is the permanent pgoutput replication slot.
	Slot string
	// NotifyChannel is LISTENed to for custom events; "" means
	// DefaultNotifyChannel. Set DisableNotify to turn LISTEN off.
	NotifyChannel string
	// DisableNotify turns the NOTIFY listener off.
	DisableNotify bool
	// Publisher takes the committed transactions (required). The reader
	// calls Begin at the start of every replication session, Append for
	// each transaction, and acknowledges to Postgres no further than
	// Durable allows.
	Publisher broker.Publisher
	// Live takes live-only events: NOTIFY and non-transactional WAL
	// messages (required).
	Live broker.LivePublisher
	// Checkpoint, when set, is the single-node resume window: the reader
	// reads the checkpoint row at start (SetBase, MarkDelivered), writes
	// it before acknowledging, and holds the slot at the oldest retained
	// event (see ResumeWALLimit). It requires a synchronous Publisher
	// (Durable(safe) == safe, as broker.Memory). Nil (cluster mode: the
	// history lives in Redis) reads and writes no checkpoint row and holds
	// nothing back.
	Checkpoint broker.Checkpoint
	Logger     zerolog.Logger
	// StatusInterval is the period of standby status updates (keep it well
	// inside the server's wal_sender_timeout).
	StatusInterval time.Duration
	// SyncInterval is how often the managed publications are re-synced with
	// the tables (new tables picked up). Zero means DefaultSyncInterval
	// when the event trigger of sql/setup.sql (TriggerName) is installed,
	// which publishes new tables in their creating transaction, and
	// DefaultSyncNoTrigger when it is not. Negative disables.
	SyncInterval time.Duration
	// SlotStatsInterval is how often the slot's retained WAL is measured.
	SlotStatsInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnection delay.
	MinBackoff, MaxBackoff time.Duration
	// SlotBusyRetry, when positive, is the fixed delay before another
	// start when the slot is held by another process (ErrSlotInUse),
	// instead of the backoff: a new cluster leader waits for the old
	// leader's walsender to end and should take the slot promptly when it
	// does (docs/cluster.md section 8: 200 ms). Zero: the backoff.
	SlotBusyRetry time.Duration
	// ResumeWALLimit bounds the WAL the slot retains so that a restart can
	// rebuild the sink's resume window: the reader acknowledges only up to
	// the transaction of the oldest retained event while the server's WAL
	// is at most this many bytes ahead of it, and past that acknowledges
	// everything published (a restart then resumes only clients that saw
	// the last event). Zero means DefaultResumeWALLimit; negative never
	// holds back.
	ResumeWALLimit int64
	// BatchWindow: while transactions arrive closely (less than a
	// quarter of it apart), the reader pauses this long after each one
	// before it reads again, so that the transactions committed meanwhile
	// are read with one system call and handed on together, instead of a
	// wake-up of the reader and of each subscriber's writer per message.
	// It adds at most this much latency, and only under dense traffic.
	// Zero means DefaultBatchWindow; negative disables.
	BatchWindow time.Duration
	// ServerTimeout detects a dead path to Postgres (one that stops
	// carrying packets without closing). When the replication stream has
	// been silent for a StatusInterval, the reader asks Postgres for a
	// reply; when none comes within ServerTimeout, it asks over its regular
	// connection what the walsender is doing, and unless it is busy (a
	// large transaction being decoded), ends the connection and reconnects,
	// ending its own dead walsender that still holds the slot. Zero means
	// DefaultServerTimeout; negative disables.
	ServerTimeout time.Duration
}

// DefaultBatchWindow is the default Config.BatchWindow.
const DefaultBatchWindow = time.Millisecond

// DefaultResumeWALLimit is the default Config.ResumeWALLimit.
const DefaultResumeWALLimit = 64 << 20

// Reader streams committed changes from a logical replication slot to a
// broker.Publisher. Create it with NewReader and call Run once.
type Reader struct {
	cfg Config
	log zerolog.Logger

	mu     sync.Mutex
	ready  bool
	reason string

	// State of the Run goroutine.
	syncer        *syncer
	dec           *decoder
	ackLSN        pglogrepl.LSN   // flush position acknowledged to Postgres
	safeLSN       pglogrepl.LSN   // everything before it is published or unpublished
	lastPublished broker.Position // last event published (or the base)
	ckptPos       broker.Position // base position in the checkpoint table
	ckptDelivered broker.Position // delivered position in the checkpoint table
	baseDone      bool            // checkpoint read (or discarded) once
	serverWALEnd  pglogrepl.LSN

	killed atomic.Bool // tests: stop without a final acknowledgement
	kill   context.CancelFunc

	walEvents prometheus.Counter // metrics.EventsReceived{source="wal"}, looked up once
	lastTx    time.Time          // when the last transaction was handled (BatchWindow)
	pauseDue  bool               // dense traffic: pause once everything received is handled

	appName   string    // application_name of the replication connection (carries the run id)
	heard     bool      // a message arrived since the last status tick
	lastHeard time.Time // when the last tick found that a message had arrived
	askReply  bool      // the standby status asks Postgres for an immediate reply
	askedAt   time.Time // when the unanswered reply request was first sent; zero: none

	dropListener context.CancelCauseFunc // ends the NOTIFY listener's connection (under mu)
}

// NewReader validates cfg and returns a Reader.
func NewReader(cfg Config) (*Reader, error) {
	if cfg.ConnString == "" {
		return nil, errors.New("cdc: ConnString is required")
	}
	if cfg.Publisher == nil {
		return nil, errors.New("cdc: Publisher is required")
	}
	if cfg.Live == nil {
		return nil, errors.New("cdc: Live is required")
	}
	switch {
	case cfg.DisableNotify:
		cfg.NotifyChannel = ""
	case cfg.NotifyChannel == "":
		cfg.NotifyChannel = DefaultNotifyChannel
	}
	if cfg.Publication == "" {
		cfg.Publication = DefaultPublication
	}
	if cfg.Slot == "" {
		cfg.Slot = DefaultSlot
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.SlotStatsInterval <= 0 {
		cfg.SlotStatsInterval = DefaultSlotStatsInterval
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.ResumeWALLimit == 0 {
		cfg.ResumeWALLimit = DefaultResumeWALLimit
	}
	if cfg.BatchWindow == 0 {
		cfg.BatchWindow = DefaultBatchWindow
	}
	if cfg.ServerTimeout == 0 {
		cfg.ServerTimeout = DefaultServerTimeout
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if err := checkName("publication", cfg.Publication, 63-len(InsertOnlySuffix)); err != nil {
		return nil, err
	}
	if err := checkName("slot", cfg.Slot, 63); err != nil {
		return nil, err
	}
	pcfg, err := pgconn.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("cdc: database url: %w", err)
	}
	log := cfg.Logger.With().Str(logComponent, "cdc").Logger()
	r := &Reader{cfg: cfg, log: log, reason: "replication stream not started", walEvents: metrics.EventsReceived.WithLabelValues("wal")}
	r.appName = replAppName(pcfg.RuntimeParams["application_name"], newRunID())
	r.syncer = newSyncer(cfg.Publication, log)
	switch {
	case cfg.SyncInterval == 0:
		r.syncer.interval = DefaultSyncNoTrigger
	case cfg.SyncInterval > 0:
		r.syncer.interval = cfg.SyncInterval
	}
	return r, nil
}

// Ready reports whether the WAL stream is connected (and so Postgres
// reachable); otherwise reason says why not.
func (r *Reader) Ready() (ok bool, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, r.reason
}

func (r *Reader) setReady(ok bool, reason string) {
	r.mu.Lock()
	r.ready, r.reason = ok, reason
	r.mu.Unlock()
	if ok {
		metrics.StreamConnected.Set(1)
	} else {
		metrics.StreamConnected.Set(0)
	}
}

// Run streams until ctx is cancelled, reconnecting with backoff on its
// own. On cancellation it writes the checkpoint, sends a last standby
// status with the acknowledged LSN and returns nil. It returns an error only
// for setup failures that need a change by the user (IsFatal).
func (r *Reader) Run(ctx context.Context) error {
	ctx, kill := context.WithCancel(ctx)
	r.mu.Lock()
	r.kill = kill
	r.mu.Unlock()
	var wg sync.WaitGroup
	defer func() {
		kill()
		wg.Wait()
		if ok, _ := r.Ready(); ok {
			r.setReady(false, "reader stopped")
		}
	}()
	if r.cfg.NotifyChannel != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.listen(ctx)
		}()
	}

	backoff := r.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		started := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil || err == nil {
			return nil
		}
		if IsFatal(err) {
			r.setReady(false, err.Error())
			r.log.Error().Err(err).Msg("replication setup failed")
			return err
		}
		r.setReady(false, "replication stream disconnected: "+err.Error())
		if errors.Is(err, ErrDeadPath) || pgconn.Timeout(err) {
			// The listener's idle connection is on the same path.
			r.restartListener(err)
		}
		if time.Since(started) > 30*time.Second {
			backoff, attempt = r.cfg.MinBackoff, 1
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		slotBusy := r.cfg.SlotBusyRetry > 0 && errors.Is(err, ErrSlotInUse)
		if slotBusy {
			wait = r.cfg.SlotBusyRetry
		}
		r.log.Warn().Err(err).Int(logAttempt, attempt).Dur(logBackoff, wait).Msg("replication stream disconnected; reconnecting")
		metrics.Reconnects.WithLabelValues("replication").Inc()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if !slotBusy {
			backoff = min(backoff*2, r.cfg.MaxBackoff)
		}
	}
}

// session runs one replication connection from setup to error or
// cancellation.
func (r *Reader) session(ctx context.Context) (err error) {
	conn, err := connectRegular(ctx, r.cfg.ConnString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return &fatalError{&walLevelError{walLevel}}
	}
	pubs, err := r.syncer.sync(ctx, conn)
	if err != nil {
		return err
	}

	repl, err := r.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if r.killed.Load() {
			_ = repl.Conn().Close()
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = repl.Close(cctx)
	}()

	created, confirmed, err := r.ensureSlot(ctx, conn, repl)
	if err != nil {
		return err
	}
	if err := r.startWindow(ctx, conn, created, confirmed); err != nil {
		return err
	}
	if confirmed > r.ackLSN {
		r.ackLSN = confirmed
	}
	if r.ackLSN > r.safeLSN {
		r.safeLSN = r.ackLSN
	}

	if r.dec == nil {
		r.dec = newDecoder(&pgCatalog{conn: conn}, r.log)
	} else {
		r.dec.cat = &pgCatalog{conn: conn}
		r.dec.reset()
	}

	if err := r.takeSlot(ctx, conn, repl.PID()); err != nil {
		return err
	}
	// Everything after the slot's confirmed position is streamed (again)
	// from now on.
	if err := r.cfg.Publisher.Begin(ctx, broker.Position{LSN: uint64(confirmed)}); err != nil {
		return fmt.Errorf("begin publishing at %s: %w", confirmed, err)
	}
	quoted := make([]string, len(pubs))
	for i, p := range pubs {
		quoted[i] = `"` + p + `"`
	}
	err = pglogrepl.StartReplication(ctx, repl, r.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names '" + strings.Join(quoted, ",") + "'",
			"messages 'true'",
		},
	})
	if err != nil {
		return startError(err)
	}
	r.log.Info().Str(logSlot, r.cfg.Slot).Strs("publications", pubs).Str(logLSN, r.ackLSN.String()).Msg("replication stream started")
	r.setReady(true, "")
	return r.stream(ctx, conn, repl, pubs)
}

func (r *Reader) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(r.cfg.ConnString)
	if err != nil {
		return nil, &fatalError{fmt.Errorf("database url: %w", err)}
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = r.appName
	connectTimeout(cfg)
	// Fixed output formats for the values pgoutput sends as text.
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cfg.RuntimeParams["DateStyle"] = "ISO, YMD"
	cfg.RuntimeParams["IntervalStyle"] = "postgres"
	cfg.RuntimeParams["bytea_output"] = "hex"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classifyConnectError("replication connection", err, true)
	}
	return conn, nil
}

// ensureSlot creates the slot when missing. It returns whether it did and
// the slot's confirmed flush LSN.
func (r *Reader) ensureSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) (bool, pglogrepl.LSN, error) {
	var (
		plugin, db, walStatus *string
		confirmed             *string
		curDB                 string
	)
	err := conn.QueryRow(ctx, `SELECT s.plugin, s.database, s.confirmed_flush_lsn::text, s.wal_status, current_database()
		FROM pg_replication_slots s WHERE s.slot_name = $1`, r.cfg.Slot).Scan(&plugin, &db, &confirmed, &walStatus, &curDB)
	if errors.Is(err, pgx.ErrNoRows) {
		res, err := pglogrepl.CreateReplicationSlot(ctx, repl, r.cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
			Mode:           pglogrepl.LogicalReplication,
			SnapshotAction: "NOEXPORT_SNAPSHOT",
		})
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "53400" {
				return false, 0, &fatalError{fmt.Errorf("create replication slot %s: %w: raise max_replication_slots in postgresql.conf or drop unused slots", r.cfg.Slot, err)}
			}
			return false, 0, fmt.Errorf("create replication slot %s: %w", r.cfg.Slot, err)
		}
		lsn, _ := pglogrepl.ParseLSN(res.ConsistentPoint)
		r.log.Info().Str(logSlot, r.cfg.Slot).Str(logLSN, res.ConsistentPoint).Msg("created replication slot")
		return true, lsn, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("look up replication slot: %w", err)
	}
	if plugin == nil || *plugin != "pgoutput" || db == nil || *db != curDB {
		p, d := "(physical)", "(none)"
		if plugin != nil {
			p = *plugin
		}
		if db != nil {
			d = *db
		}
		return false, 0, &fatalError{fmt.Errorf("replication slot %s exists for plugin %s in database %s, not pgoutput in %s: choose another slot name or drop it", r.cfg.Slot, p, d, curDB)}
	}
	if walStatus != nil && *walStatus == "lost" {
		return false, 0, &fatalError{fmt.Errorf("replication slot %s was invalidated (the WAL it needed was removed; see max_slot_wal_keep_size): run `pgrealtime teardown --yes` and start again (changes made meanwhile are lost)", r.cfg.Slot)}
	}
	var lsn pglogrepl.LSN
	if confirmed != nil {
		lsn, _ = pglogrepl.ParseLSN(*confirmed)
	}
	return false, lsn, nil
}

// stream is the replication loop: receive, decode, publish, acknowledge.
func (r *Reader) stream(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, pubs []string) error {
	now := time.Now()
	nextStatus := now.Add(r.cfg.StatusInterval)
	nextStats := now
	syncInterval := r.syncInterval()
	nextSync := now.Add(syncInterval)
	r.heard, r.lastHeard, r.askReply, r.askedAt = false, now, false, time.Time{}

	// ReceiveMessage gets no context: with one, pgconn would set up a
	// context watcher (a channel and an AfterFunc) for every message. The
	// status tick is a read deadline on the socket instead, set once per
	// StatusInterval, and cancellation moves that deadline to the past.
	nc := repl.Conn()
	stopWatch := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		stopWatch()
		_ = nc.SetReadDeadline(time.Time{})
	}()
	if err := nc.SetReadDeadline(nextStatus); err != nil {
		return fmt.Errorf("set read deadline: %w", err)
	}

	for {
		if ctx.Err() != nil {
			return r.finish(conn, repl)
		}
		now := time.Now()
		if !now.Before(nextStatus) {
			r.tickLiveness(now)
			if err := r.acknowledge(ctx, conn, repl); err != nil {
				return err
			}
			if r.askReply && r.askedAt.IsZero() {
				r.askedAt = now
			}
			if !now.Before(nextStats) {
				r.slotStats(ctx, conn)
				nextStats = now.Add(r.cfg.SlotStatsInterval)
			}
			if syncInterval > 0 && !now.Before(nextSync) && !r.dec.inTx() {
				got, err := r.syncer.sync(ctx, conn)
				if err != nil {
					return err
				}
				if !slices.Equal(got, pubs) {
					return fmt.Errorf("publications changed to %v: restarting the stream", got)
				}
				nextSync = now.Add(syncInterval)
			}
			// From now, not from the tick's start: every read waits for
			// data for a while, however long the tick's work took (a
			// timeout must mean silence, see checkPath).
			nextStatus = time.Now().Add(r.cfg.StatusInterval)
			if err := nc.SetReadDeadline(nextStatus); err != nil {
				return fmt.Errorf("set read deadline: %w", err)
			}
			// Cancelled before the new deadline was set: the AfterFunc's
			// deadline in the past may have been overwritten.
			if ctx.Err() != nil {
				return r.finish(conn, repl)
			}
		}

		msg, err := repl.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return r.finish(conn, repl)
			}
			if pgconn.Timeout(err) {
				if err := r.checkSilence(ctx, conn, repl); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		r.heard = true
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			published, err := r.handleCopyData(ctx, conn, repl, msg.Data)
			if err != nil {
				if ctx.Err() != nil {
					return r.finish(conn, repl)
				}
				return err
			}
			if r.cfg.BatchWindow > 0 {
				r.batchPause(repl, published)
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.NoticeResponse:
		default:
			return fmt.Errorf("replication stream: unexpected message %T", msg)
		}
	}
}

// syncInterval is the period of the publication re-sync (Config.SyncInterval).
func (r *Reader) syncInterval() time.Duration {
	switch {
	case r.cfg.SyncInterval != 0:
		return r.cfg.SyncInterval
	case r.syncer.hasTrigger, !r.syncer.managed:
		return DefaultSyncInterval
	}
	return DefaultSyncNoTrigger
}

// handleCopyData handles one message of the stream; published reports
// whether it completed a transaction.
func (r *Reader) handleCopyData(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, data []byte) (published bool, err error) {
	if len(data) == 0 {
		return false, nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("keepalive: %w", err)
		}
		r.serverWALEnd = ka.ServerWALEnd
		if !r.dec.inTx() {
			// Nothing in flight: everything the server has sent is
			// handled, so its position is safe (acknowledged by the next
			// acknowledge, after the checkpoint).
			if ka.ServerWALEnd > r.safeLSN {
				r.safeLSN = ka.ServerWALEnd
			}
			metrics.ReplicationLagBytes.Set(0)
		}
		if ka.ReplyRequested {
			// Answer at once with what is acknowledged, then move on.
			if err := r.sendStatus(repl); err != nil {
				return false, err
			}
			return false, r.acknowledge(ctx, conn, repl)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("xlogdata: %w", err)
		}
		if xld.ServerWALEnd > r.serverWALEnd {
			r.serverWALEnd = xld.ServerWALEnd
		}
		if r.serverWALEnd > xld.WALStart {
			metrics.ReplicationLagBytes.Set(float64(r.serverWALEnd - xld.WALStart))
		} else {
			metrics.ReplicationLagBytes.Set(0)
		}
		out, err := r.dec.decode(ctx, xld.WALData)
		if err != nil {
			return false, fmt.Errorf("decode at %s: %w", xld.WALStart, err)
		}
		if out.live != nil {
			r.walEvents.Inc()
			if err := r.cfg.Live.PublishLive(ctx, out.live); err != nil {
				r.log.Warn().Err(err).Msg("publish live event")
			}
		}
		if out.tx != nil {
			return true, r.publish(ctx, conn, repl, out.tx)
		}
	}
	return false, nil
}

// batchPause runs after each message; published says it completed a
// transaction. Under dense traffic (that transaction less than a quarter of
// BatchWindow after the one before), once everything received is handled
// (the messages that follow a commit, such as a keepalive, included) and
// nothing more waits in the socket, it waits BatchWindow, so that the
// transactions committed meanwhile are read with one system call and handed
// on together instead of a wake-up of this goroutine, and of each
// subscriber's writer, per message. It never waits while data is waiting
// (catching up) or inside a transaction.
func (r *Reader) batchPause(repl *pgconn.PgConn, published bool) {
	if published {
		now := time.Now()
		r.pauseDue = now.Sub(r.lastTx) < r.cfg.BatchWindow/4
		r.lastTx = now
	}
	if !r.pauseDue || r.dec.inTx() || repl.Frontend().ReadBufferLen() != 0 {
		return
	}
	r.pauseDue = false
	if n, ok := socketPending(repl.Conn()); ok && n == 0 {
		time.Sleep(r.cfg.BatchWindow)
	}
}

// finish runs on cancellation: checkpoint, last status, and return nil.
func (r *Reader) finish(conn *pgx.Conn, repl *pgconn.PgConn) error {
	if r.killed.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.askReply = false // the last status asks for nothing
	if err := r.acknowledge(ctx, conn, repl); err != nil {
		r.log.Warn().Err(err).Msg("final acknowledgement")
	} else if err := endCopy(repl); err != nil {
		r.log.Warn().Err(err).Msg("final acknowledgement: end of stream not confirmed by the server")
	} else {
		r.log.Info().Str(logLSN, r.ackLSN.String()).Msg("replication stream stopped; final position acknowledged")
	}
	return nil
}

// endCopy ends the COPY of the replication stream and waits (bounded) for
// the server's answer: once it arrives, the walsender has processed the
// final standby status, so the slot's confirmed position is up to date
// before the process exits.
func endCopy(repl *pgconn.PgConn) error {
	nc := repl.Conn()
	if err := nc.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	defer nc.SetDeadline(time.Time{})
	_, err := pglogrepl.SendStandbyCopyDone(context.Background(), repl)
	return err
}

func (r *Reader) slotStats(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var retained *int64
	err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&retained)
	if err != nil {
		r.log.Debug().Err(err).Msg("slot statistics")
		return
	}
	if retained != nil {
		metrics.SlotRetainedBytes.Set(float64(*retained))
	}
}

// stopAbruptly makes Run return at once without a checkpoint or a final
// acknowledgement, as if the process died (tests).
func (r *Reader) stopAbruptly() {
	r.killed.Store(true)
	r.mu.Lock()
	kill := r.kill
	r.mu.Unlock()
	if kill != nil {
		kill()
	}
}
