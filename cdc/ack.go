package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// startWindow sets up the resume window at the start of a session, after
// the slot exists: with a Checkpoint, from the checkpoint row (once per
// Run, or again when the slot was recreated); without one, the slot's
// confirmed position is where publishing starts.
func (r *Reader) startWindow(ctx context.Context, conn *pgx.Conn, created bool, confirmed pglogrepl.LSN) error {
	// Nothing before the slot's start is streamed: that is the base.
	slotBase := broker.Position{LSN: uint64(confirmed)}
	if created && r.baseDone {
		r.log.Warn().Str(logSlot, r.cfg.Slot).Msg("replication slot was missing and has been recreated: changes made meanwhile are not streamed")
	}
	if r.cfg.Checkpoint == nil {
		// Without a Checkpoint (cluster mode) the Publisher decides what
		// is there already (Redis: stream ids): everything the slot
		// streams again is appended again, since a failed session may
		// have lost what it had appended but not acknowledged.
		r.lastPublished = slotBase
		r.baseDone = true
		return nil
	}
	if created {
		if _, err := conn.Exec(ctx, `DELETE FROM pgrealtime.checkpoint WHERE slot = $1`, r.cfg.Slot); err != nil {
			return fmt.Errorf("delete stale checkpoint: %w", err)
		}
		r.cfg.Checkpoint.SetBase(slotBase)
		r.lastPublished = slotBase
		r.ckptPos, r.ckptDelivered = broker.Position{}, broker.Position{}
		r.baseDone = true
		return nil
	}
	if r.baseDone {
		return nil
	}
	var s string
	var delivered *string
	err := conn.QueryRow(ctx, `SELECT position, delivered FROM pgrealtime.checkpoint WHERE slot = $1`, r.cfg.Slot).Scan(&s, &delivered)
	pos, perr := broker.ParsePosition(s)
	switch {
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("read checkpoint: %w", err)
	case err != nil || perr != nil:
		if err == nil {
			r.log.Warn().Str("position", s).Msg("ignoring malformed checkpoint")
		}
		// No checkpoint: the slot streams what follows its confirmed
		// position, the stream's start (a valid since for clients).
		r.cfg.Checkpoint.SetBase(slotBase)
		r.lastPublished = slotBase
	default:
		r.cfg.Checkpoint.SetBase(pos)
		r.lastPublished, r.ckptPos, r.ckptDelivered = pos, pos, pos
		if delivered != nil {
			if d, err := broker.ParsePosition(*delivered); err == nil && pos.Less(d) {
				r.cfg.Checkpoint.MarkDelivered(d)
				r.ckptDelivered = d
			}
		}
		r.log.Info().Str("position", s).Str("delivered", r.ckptDelivered.String()).Msg("resuming after checkpoint")
	}
	r.baseDone = true
	return nil
}

// publish hands one decoded transaction to the Publisher (unless every
// event of it was published before) and moves the safe position past it.
func (r *Reader) publish(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, tx *broker.Tx) error {
	end := pglogrepl.LSN(tx.EndLSN)
	metrics.LastCommitTimestamp.Set(float64(tx.CommitTime.UnixNano()) / 1e9)
	switch {
	case len(tx.Events) == 0:
	case !r.lastPublished.Less(tx.Events[len(tx.Events)-1].Position):
		// Every event of it was published before (the last transaction,
		// sent again after a reconnect). A transaction only partly before
		// the base (after a restart) is published: the broker drops the
		// events at or before its base.
		r.log.Debug().Str(logLSN, pglogrepl.LSN(tx.CommitLSN).String()).Msg("skipping transaction published before")
	default:
		if err := r.appendTx(ctx, conn, repl, tx); err != nil {
			return fmt.Errorf("publish transaction %s: %w", pglogrepl.LSN(tx.CommitLSN), err)
		}
		if last := tx.Events[len(tx.Events)-1].Position; r.lastPublished.Less(last) {
			r.lastPublished = last
		}
		metrics.ReplicationLagSeconds.Set(time.Since(tx.CommitTime).Seconds())
		metrics.Transactions.Inc()
		r.walEvents.Add(float64(len(tx.Events)))
	}
	if end > r.safeLSN {
		r.safeLSN = end
	}
	return nil
}

// appendTx calls Publisher.Append with a deadline of one status interval.
// While Append is blocked (backpressure) the reader acknowledges what is
// durable and sends a standby status after each interval, then retries,
// so that wal_sender_timeout never ends a session that only waits on the
// broker.
func (r *Reader) appendTx(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, tx *broker.Tx) error {
	for {
		actx, cancel := context.WithTimeout(ctx, r.cfg.StatusInterval)
		err := r.cfg.Publisher.Append(actx, tx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		r.log.Debug().Str(logLSN, pglogrepl.LSN(tx.CommitLSN).String()).Msg("publisher busy; sending standby status and retrying")
		if err := r.acknowledge(ctx, conn, repl); err != nil {
			return err
		}
	}
}

// acknowledge moves the acknowledged position to what the Publisher
// reports durable (and, with a Checkpoint, writes the checkpoint when the
// events published since the last write are about to be acknowledged),
// then sends the standby status. A failed write leaves the acknowledged
// position where it was; a Durable error ends the session.
func (r *Reader) acknowledge(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) error {
	durable, err := r.cfg.Publisher.Durable(uint64(r.safeLSN))
	if err != nil {
		_ = r.sendStatus(repl)
		return fmt.Errorf("publisher: %w", err)
	}
	target := min(pglogrepl.LSN(durable), r.safeLSN)
	if r.cfg.Checkpoint == nil {
		r.ackLSN = max(r.ackLSN, target)
		return r.sendStatus(repl)
	}
	target, base := r.ackTarget(target)
	if target > r.ackLSN || (target == r.ackLSN && r.lastPublished != r.ckptDelivered) {
		if base != r.ckptPos || r.lastPublished != r.ckptDelivered {
			if err := r.writeCheckpoint(ctx, conn, base, r.lastPublished); err != nil {
				r.log.Error().Err(err).Msg("write checkpoint; not acknowledging")
				_ = r.sendStatus(repl)
				return fmt.Errorf("write checkpoint: %w", err)
			}
			r.ckptPos, r.ckptDelivered = base, r.lastPublished
		}
		r.ackLSN = max(r.ackLSN, target)
	}
	return r.sendStatus(repl)
}

// ackTarget limits durable (how far the Publisher allows acknowledging) by
// the Checkpoint's window and returns the checkpoint base that goes with
// it (every event after base is streamed again after a restart).
// Everything published may be acknowledged; but while the Checkpoint
// retains a resume window and the WAL since its oldest transaction is
// within ResumeWALLimit, the reader holds the slot at that transaction, so
// that a restart streams the window again and clients that resume from any
// position in it lose nothing.
func (r *Reader) ackTarget(durable pglogrepl.LSN) (pglogrepl.LSN, broker.Position) {
	target, base := durable, r.lastPublished
	if r.cfg.ResumeWALLimit < 0 {
		return target, base
	}
	wbase, first := r.cfg.Checkpoint.Retained()
	hold := pglogrepl.LSN(first.LSN)
	switch {
	case first.IsZero(), hold >= target, hold < r.ackLSN:
		return target, base
	case r.serverWALEnd > hold && int64(r.serverWALEnd-hold) > r.cfg.ResumeWALLimit:
		return target, base
	}
	return hold, wbase
}

func (r *Reader) writeCheckpoint(ctx context.Context, conn *pgx.Conn, pos, delivered broker.Position) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, `INSERT INTO pgrealtime.checkpoint (slot, position, delivered, updated_at) VALUES ($1, $2, $3, now())
		ON CONFLICT (slot) DO UPDATE SET position = excluded.position, delivered = excluded.delivered, updated_at = excluded.updated_at`,
		r.cfg.Slot, pos.String(), delivered.String())
	return err
}

func (r *Reader) sendStatus(repl *pgconn.PgConn) error {
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: r.ackLSN,
		WALFlushPosition: r.ackLSN,
		WALApplyPosition: r.ackLSN,
		ReplyRequested:   r.askReply,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}
