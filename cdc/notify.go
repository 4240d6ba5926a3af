package cdc

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// listen receives NOTIFY on the configured channel until ctx ends,
// reconnecting with backoff. Valid payloads become live custom events;
// malformed ones are logged and counted, never delivered.
func (r *Reader) listen(ctx context.Context) {
	log := r.log.With().Str("channel", r.cfg.NotifyChannel).Logger()
	backoff := r.cfg.MinBackoff
	for attempt := 1; ctx.Err() == nil; attempt++ {
		started := time.Now()
		err := r.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 30*time.Second {
			backoff = r.cfg.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn().Err(err).Int(logAttempt, attempt).Dur(logBackoff, wait).Msg("notify listener disconnected; reconnecting")
		metrics.Reconnects.WithLabelValues("notify").Inc()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, r.cfg.MaxBackoff)
	}
}

func (r *Reader) listenOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r.mu.Lock()
	r.dropListener = cancel
	r.mu.Unlock()
	conn, err := connectRegular(ctx, r.cfg.ConnString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.cfg.NotifyChannel}.Sanitize()); err != nil {
		return err
	}
	r.log.Debug().Str("channel", r.cfg.NotifyChannel).Msg("listening for notifications")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && cause != context.Canceled {
				return cause
			}
			return err
		}
		r.handleNotify(ctx, n.Payload)
	}
}

func (r *Reader) handleNotify(ctx context.Context, payload string) {
	p, err := ParseCustomPayload([]byte(payload))
	if err != nil {
		metrics.BadPayloads.WithLabelValues("notify").Inc()
		r.log.Warn().Str("source", "notify").Err(err).Msg("ignoring malformed notification payload")
		return
	}
	metrics.EventsReceived.WithLabelValues("notify").Inc()
	if err := r.cfg.Live.PublishLive(ctx, p.ToEvent(timeNow(), zeroPos)); err != nil {
		r.log.Warn().Err(err).Msg("publish notification event")
	}
}

// restartListener makes the NOTIFY listener drop its connection and
// reconnect: after the replication connection found the path to Postgres
// dead, the listener's connection, on the same path and idle, would
// otherwise wait for ever without noticing.
func (r *Reader) restartListener(cause error) {
	r.mu.Lock()
	drop := r.dropListener
	r.mu.Unlock()
	if drop != nil {
		drop(cause)
	}
}
