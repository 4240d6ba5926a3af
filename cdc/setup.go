package cdc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	pgsql "github.com/pgrealtime/pgrealtime/sql"
)

// ManagedComment marks the publications pgrealtime created and maintains.
// A publication without it is the user's, and pgrealtime never alters it.
const ManagedComment = "managed by pgrealtime"

// InsertOnlySuffix names the second managed publication: tables without a
// primary key or replica identity, published for insert and truncate only
// (Postgres would otherwise reject UPDATE and DELETE on them).
const InsertOnlySuffix = "_insert_only"

// Setup applies sql/setup.sql (idempotent) and synchronises the managed
// publications: <publication> lists every user table with a primary key or
// a replica identity, <publication>_insert_only the tables with neither
// (a warning names them). A publication pgrealtime did not create is left
// as it is. The Reader calls Setup on start and then periodically.
func Setup(ctx context.Context, connString, publication string, log zerolog.Logger) error {
	if err := checkName("publication", publication, 63-len(InsertOnlySuffix)); err != nil {
		return err
	}
	conn, err := connectRegular(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	s := newSyncer(publication, log)
	_, err = s.sync(ctx, conn)
	return err
}

// Teardown drops the replication slot (terminating the walsender using it)
// and the publications Setup created (those with ManagedComment), deletes
// the slot's checkpoint and, when no managed publication is left in the
// database, drops the event trigger TriggerName and its function. Missing
// objects are fine.
func Teardown(ctx context.Context, connString, publication, slot string) error {
	conn, err := connectRegular(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for i := 0; ; i++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		if err == nil {
			break
		}
		var pgErr *pgconn.PgError
		if i >= 50 || !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use: walsender still exiting
			return fmt.Errorf("drop replication slot %s: %w", slot, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, pub := range []string{publication, publication + InsertOnlySuffix} {
		var comment *string
		err := conn.QueryRow(ctx, `SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1`, pub).Scan(&comment)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look up publication %s: %w", pub, err)
		}
		if comment == nil || *comment != ManagedComment {
			continue // the user's own publication
		}
		if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{pub}.Sanitize()); err != nil {
			return fmt.Errorf("drop publication %s: %w", pub, err)
		}
	}
	if _, err := conn.Exec(ctx, `DELETE FROM pgrealtime.checkpoint WHERE slot = $1`, slot); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "42P01" && pgErr.Code != "3F000") {
			return fmt.Errorf("delete checkpoint: %w", err)
		}
	}
	return dropTrigger(ctx, conn)
}

func connectRegular(ctx context.Context, connString string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, &fatalError{fmt.Errorf("database url: %w", err)}
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "pgrealtime"
	}
	connectTimeout(&cfg.Config)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classifyConnectError("connect", err, false)
	}
	return conn, nil
}

// syncer keeps the managed publications in line with the tables. It
// remembers what it logged so that periodic runs only log changes.
type syncer struct {
	publication string
	log         zerolog.Logger

	// interval is the re-sync period the reader uses without the event
	// trigger (named in the warning); zero when nothing re-syncs.
	interval time.Duration

	setupDone      bool
	triggerChecked bool
	hasTrigger     bool // the event trigger is installed and enabled
	managed        bool // pgrealtime manages a publication's members
	warned         map[string]bool
	userNotice     bool
	lastStreams    []string
}

func newSyncer(publication string, log zerolog.Logger) *syncer {
	return &syncer{publication: publication, log: log, warned: map[string]bool{}}
}

type pubInfo struct {
	exists, managed bool
}

type tableInfo struct {
	oid          uint32
	schema, name string
	keyed        bool
}

func (t tableInfo) qualified() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }
func (t tableInfo) display() string   { return t.schema + "." + t.name }

const tablesSQL = `
SELECT c.oid, n.nspname, c.relname,
  CASE c.relreplident
    WHEN 'f' THEN true
    WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
    WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
    ELSE false
  END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgrealtime')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname`

// sync applies setup.sql (once) and the publication membership. It
// returns the publications to stream.
func (s *syncer) sync(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	if !s.setupDone {
		if _, err := conn.Exec(ctx, pgsql.Setup); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" {
				var ok bool
				_ = conn.QueryRow(ctx, `SELECT to_regclass('pgrealtime.checkpoint') IS NOT NULL AND to_regprocedure('pgrealtime.broadcast(text,text,jsonb,text)') IS NOT NULL`).Scan(&ok)
				if !ok {
					return nil, &fatalError{fmt.Errorf("apply sql/setup.sql: %w: grant the role CREATE on the database, or run sql/setup.sql once as a role that has it", err)}
				}
				s.log.Warn().Err(err).Msg("cannot re-apply sql/setup.sql; using the existing pgrealtime schema")
			} else {
				return nil, fmt.Errorf("apply sql/setup.sql: %w", err)
			}
		}
		s.setupDone = true
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("sync publications: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '2s'`); err != nil {
		return nil, fmt.Errorf("sync publications: %w", err)
	}

	main, io := s.publication, s.publication+InsertOnlySuffix
	pubs := map[string]*pubInfo{main: {}, io: {}}
	rows, err := tx.Query(ctx, `SELECT pubname, coalesce(obj_description(oid, 'pg_publication'), '') FROM pg_publication WHERE pubname = ANY($1)`, []string{main, io})
	if err != nil {
		return nil, fmt.Errorf("look up publications: %w", err)
	}
	for rows.Next() {
		var name, comment string
		if err := rows.Scan(&name, &comment); err != nil {
			return nil, err
		}
		pubs[name].exists, pubs[name].managed = true, comment == ManagedComment
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up publications: %w", err)
	}

	create := func(name, with string) error {
		q := "CREATE PUBLICATION " + pgx.Identifier{name}.Sanitize() + " WITH (" + with + ")"
		if _, err := tx.Exec(ctx, q); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" {
				return &fatalError{fmt.Errorf("create publication %s: %w: grant the role CREATE on the database, or create the publication yourself (see sql/setup.sql)", name, err)}
			}
			return fmt.Errorf("create publication %s: %w", name, err)
		}
		if _, err := tx.Exec(ctx, "COMMENT ON PUBLICATION "+pgx.Identifier{name}.Sanitize()+" IS '"+ManagedComment+"'"); err != nil {
			return fmt.Errorf("mark publication %s: %w", name, err)
		}
		pubs[name].exists, pubs[name].managed = true, true
		s.log.Info().Str("publication", name).Msg("created publication")
		return nil
	}
	if !pubs[main].exists {
		if err := create(main, "publish_via_partition_root = true"); err != nil {
			return nil, err
		}
	}
	if !pubs[main].managed {
		if !s.userNotice {
			s.log.Info().Str("publication", main).Msg("publication is user-managed (no '" + ManagedComment + "' comment): streaming it as it is")
			s.userNotice = true
		}
	} else if !pubs[io].exists {
		if err := create(io, "publish = 'insert, truncate', publish_via_partition_root = true"); err != nil {
			return nil, err
		}
	}

	s.managed = pubs[main].managed || pubs[io].managed
	if s.managed {
		if err := s.syncMembers(ctx, tx, pubs); err != nil {
			return nil, err
		}
		if err := s.checkTrigger(ctx, tx); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("sync publications: %w", err)
	}
	streams := []string{main}
	if pubs[io].exists {
		streams = append(streams, io)
	}
	s.lastStreams = streams
	return streams, nil
}

func (s *syncer) syncMembers(ctx context.Context, tx pgx.Tx, pubs map[string]*pubInfo) error {
	main, io := s.publication, s.publication+InsertOnlySuffix
	var tables []tableInfo
	rows, err := tx.Query(ctx, tablesSQL)
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	for rows.Next() {
		var t tableInfo
		if err := rows.Scan(&t.oid, &t.schema, &t.name, &t.keyed); err != nil {
			return err
		}
		tables = append(tables, t)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list tables: %w", err)
	}

	members := map[string]map[uint32]tableInfo{main: {}, io: {}}
	rows, err = tx.Query(ctx, `
SELECT p.pubname, c.oid, n.nspname, c.relname
FROM pg_publication_rel pr
JOIN pg_publication p ON p.oid = pr.prpubid
JOIN pg_class c ON c.oid = pr.prrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.pubname = ANY($1)`, []string{main, io})
	if err != nil {
		return fmt.Errorf("list publication tables: %w", err)
	}
	for rows.Next() {
		var pub string
		var t tableInfo
		if err := rows.Scan(&pub, &t.oid, &t.schema, &t.name); err != nil {
			return err
		}
		members[pub][t.oid] = t
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list publication tables: %w", err)
	}

	want := map[string]map[uint32]bool{main: {}, io: {}}
	var insertOnly []string
	for _, t := range tables {
		if t.keyed {
			want[main][t.oid] = true
		} else {
			want[io][t.oid] = true
			insertOnly = append(insertOnly, t.display())
		}
	}

	alter := func(pub, verb string, t tableInfo) {
		if _, err := tx.Exec(ctx, "SAVEPOINT pgrealtime_sync"); err != nil {
			return
		}
		q := "ALTER PUBLICATION " + pgx.Identifier{pub}.Sanitize() + " " + verb + " TABLE ONLY " + t.qualified()
		if _, err := tx.Exec(ctx, q); err != nil {
			_, _ = tx.Exec(ctx, "ROLLBACK TO SAVEPOINT pgrealtime_sync")
			s.log.Warn().Err(err).Str("publication", pub).Str("table", t.display()).Msg("cannot " + strings.ToLower(verb) + " table: fix the privilege (the role must own the table) or manage the publication yourself")
			return
		}
		_, _ = tx.Exec(ctx, "RELEASE SAVEPOINT pgrealtime_sync")
		s.log.Info().Str("publication", pub).Str("table", t.display()).Msg(strings.ToLower(verb) + " table")
	}
	// Removals first: a table that lost its key must leave the main
	// publication before anything else (its UPDATE/DELETE fail meanwhile).
	for _, pub := range []string{main, io} {
		if !pubs[pub].managed {
			continue
		}
		for _, oid := range sortedOIDs(members[pub]) {
			if !want[pub][oid] {
				alter(pub, "DROP", members[pub][oid])
			}
		}
	}
	for _, pub := range []string{main, io} {
		if !pubs[pub].managed {
			continue
		}
		for _, t := range tables {
			if want[pub][t.oid] {
				if _, ok := members[pub][t.oid]; !ok {
					alter(pub, "ADD", t)
				}
			}
		}
	}

	for _, name := range insertOnly {
		if !s.warned[name] && pubs[io].managed {
			s.log.Warn().Str("table", name).Msg("table " + name + " has no primary key or replica identity: only inserts and truncates are streamed; add a primary key or ALTER TABLE " + name + " REPLICA IDENTITY FULL")
		}
	}
	warned := make(map[string]bool, len(insertOnly))
	for _, name := range insertOnly {
		warned[name] = true
	}
	s.warned = warned
	return nil
}

func sortedOIDs(m map[uint32]tableInfo) []uint32 {
	out := make([]uint32, 0, len(m))
	for oid := range m {
		out = append(out, oid)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// checkName accepts the names pgrealtime creates objects with: lower-case
// letters, digits and underscores (replication slot rules).
func checkName(what, name string, max int) error {
	if name == "" || len(name) > max {
		return &fatalError{fmt.Errorf("%s name %q: must be 1 to %d characters", what, name, max)}
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return &fatalError{fmt.Errorf("%s name %q: use only lower-case letters, digits and _", what, name)}
		}
	}
	return nil
}
