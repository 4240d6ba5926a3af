package cdc

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TriggerName is the event trigger sql/setup.sql installs (when the role
// may create event triggers: a superuser in Postgres 15) to add each new
// table to the right managed publication in the transaction that creates
// it.
const TriggerName = "pgrealtime_publish_tables"

// checkTrigger looks for the event trigger once and, when the managed
// publications depend on it and it is missing, says what that means and
// what to run.
func (s *syncer) checkTrigger(ctx context.Context, tx pgx.Tx) error {
	if s.triggerChecked {
		return nil
	}
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1 AND evtenabled <> 'D')`, TriggerName).Scan(&s.hasTrigger)
	if err != nil {
		return fmt.Errorf("look up event trigger %s: %w", TriggerName, err)
	}
	s.triggerChecked = true
	if s.hasTrigger {
		return nil
	}
	window := "until the next publication re-sync"
	if s.interval > 0 {
		window = "until the next publication re-sync (every " + s.interval.String() + ")"
	}
	s.log.Warn().Str("trigger", TriggerName).Msg("event trigger " + TriggerName + " is not installed (creating an event trigger needs a superuser): " +
		"a table created while pgrealtime runs is not published " + window + ", and rows written to it before are never streamed; " +
		"to close this window run sql/setup.sql once as a superuser: psql \"<superuser database url>\" -f sql/setup.sql")
	return nil
}

// dropTrigger removes the event trigger of sql/setup.sql and its function
// once no managed publication is left in the database (another pgrealtime
// with another publication may still need them).
func dropTrigger(ctx context.Context, conn *pgx.Conn) error {
	var managed, installed bool
	err := conn.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_publication WHERE obj_description(oid, 'pg_publication') = $1),
		EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $2) OR to_regprocedure('pgrealtime.publish_tables()') IS NOT NULL`,
		ManagedComment, TriggerName).Scan(&managed, &installed)
	if err != nil {
		return fmt.Errorf("look up event trigger %s: %w", TriggerName, err)
	}
	if managed || !installed {
		return nil
	}
	if _, err := conn.Exec(ctx, `DROP EVENT TRIGGER IF EXISTS `+TriggerName+`; DROP FUNCTION IF EXISTS pgrealtime.publish_tables()`); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return fmt.Errorf("the slot, the publications and the checkpoint are dropped, but not event trigger %s (%w): run as a superuser: DROP EVENT TRIGGER %s; DROP FUNCTION pgrealtime.publish_tables()", TriggerName, err, TriggerName)
		}
		return fmt.Errorf("drop event trigger %s: %w", TriggerName, err)
	}
	return nil
}
