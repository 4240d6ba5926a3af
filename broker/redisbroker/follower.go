package redisbroker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// The follower's XREAD COUNT and BLOCK, and how much longer than BLOCK it
// waits for an answer before it takes Redis for unreachable (a stalled
// server or a partition: the connection does not fail by itself).
const (
	readCount     = 1024
	readBlock     = time.Second
	readGraceTime = 3 * time.Second
	// loadPage is the XREVRANGE COUNT of the history load at start.
	loadPage = 1024
)

// follower is the state of the follower loop (one goroutine).
type follower struct {
	b *Broker
	// dc is the loop's own connection (nil until needed, and after an
	// error): closed when the loop's ctx ends, which ends a blocked XREAD
	// at once even when Redis does not answer (a pooled connection would
	// wait out the BLOCK time).
	dc     rueidis.DedicatedClient
	undo   func() bool
	loaded bool
	// cursor is the id XREAD continues after: the last entry taken in.
	cursor string
	// resume is the cursor after the last entry applied (or skipped as
	// undecodable): where reading continues after a Redis error.
	resume string
	// applied is the id of the last entry applied (or the base after a
	// Reset); hasApplied is false on a node that started on an empty
	// stream and has applied nothing yet.
	applied    broker.Position
	hasApplied bool
	// broken: an entry was skipped; the next transaction resets.
	broken bool
	// The transaction being assembled: its entries so far, the p of its
	// first entry, the id of its last one.
	pending  []*broker.Event
	pendPrev broker.Position
	pendLast broker.Position
	// lagAt is when pgrealtime_cluster_stream_lag_bytes was last measured.
	lagAt time.Time
	// dec decodes the entries' events.
	dec broker.BinaryDecoder
	// pre is the XREAD sent ahead, if any.
	pre *prefetch
}

// lagEvery paces the stream lag measurement while the node is reading.
const lagEvery = time.Second

// measureLag sets pgrealtime_cluster_stream_lag_bytes: the WAL between the
// stream's newest entry and the last one applied here.
func (f *follower) measureLag(ctx context.Context) error {
	c := f.conn(ctx)
	rctx, cancel := context.WithTimeout(ctx, readGraceTime)
	defer cancel()
	newest, err := c.Do(rctx, c.B().Xrevrange().Key(f.b.keys.stream).End("+").Start("-").Count(1).Build()).AsXRangeSlices()
	if err != nil {
		return fmt.Errorf("read the stream's last entry: %w", err)
	}
	f.setLag(newest)
	return nil
}

// setLag sets the lag from the stream's newest entry (none: 0).
func (f *follower) setLag(newest []rueidis.XRangeSlice) {
	f.lagAt = time.Now()
	lag := uint64(0)
	if len(newest) > 0 {
		if last, err := parseStreamID(newest[0].ID); err == nil && f.applied.LSN < last.LSN {
			lag = last.LSN - f.applied.LSN
		}
	}
	metrics.ClusterStreamLag.Set(float64(lag))
}

// follow runs the follower loop until ctx ends: load the history, then
// read the stream, retrying with backoff after a Redis error.
func (b *Broker) follow(ctx context.Context) {
	f := &follower{b: b}
	defer f.dropConn()
	b.setFollowReason("loading history from redis")
	backoff := minBackoff
	for ctx.Err() == nil {
		var err error
		if !f.loaded {
			err = f.load(ctx)
		} else {
			if b.beforeRead != nil {
				b.beforeRead(ctx)
			}
			var n int
			n, err = f.next(ctx)
			switch {
			case err != nil:
			case n == 0:
				_, err = f.idle(ctx)
			case time.Since(f.lagAt) >= lagEvery:
				err = f.measureLag(ctx)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.dropConn()
			metrics.RedisConnected.Set(0)
			b.setFollowReason("redis: " + err.Error())
			b.log.Warn().Err(err).Dur("retry_in", backoff).Msg("reading the redis stream failed")
			f.restart()
			if !sleep(ctx, backoff) {
				return
			}
			backoff = nextBackoff(backoff)
			continue
		}
		backoff = minBackoff
		metrics.RedisConnected.Set(1)
		b.setFollowReason("")
	}
}

// next takes in what comes next: this node's own confirmed transactions
// (local.go), or, while it appends and has nothing of its own to take, a
// wait for them, or else one XREAD. n is 0 only when the stream had
// nothing new.
func (f *follower) next(ctx context.Context) (n int, err error) {
	b := f.b
	switch {
	case f.takeLocal():
		return 1, nil
	case f.atBoundary() && b.local.serving(f.applied):
		// After a quiet BLOCK time, check the stream.
		if !f.waitLocal(ctx) {
			var behind bool
			if behind, err = f.idle(ctx); behind && err == nil {
				// Entries this node did not append: read the stream
				// until it has caught up.
				b.local.missed()
			}
		}
		return 1, err // idle ran, or there is something to take
	}
	gen := b.local.generation()
	if n, err = f.read(ctx); n == 0 && err == nil {
		b.local.caughtUp(gen)
	}
	return n, err
}

// conn returns the loop's connection, taking one from the pool if needed.
func (f *follower) conn(ctx context.Context) rueidis.DedicatedClient {
	f.settle() // one command at a time on it
	if f.dc == nil {
		dc, _ := f.b.c.Dedicate()
		f.dc, f.undo = dc, context.AfterFunc(ctx, dc.Close)
	}
	return f.dc
}

// dropConn closes the loop's connection (after an error, or at the end).
func (f *follower) dropConn() {
	if f.dc != nil {
		f.undo()
		f.dc.Close()
		f.dc, f.undo = nil, nil
	}
	f.settle() // the closed connection ends it
	f.pre = nil
}

// atBoundary reports whether the node has a position, is between two
// transactions and skipped no entry since: where a transaction of its own
// appender may follow (local.go).
func (f *follower) atBoundary() bool {
	return f.hasApplied && !f.broken && len(f.pending) == 0
}

// restart drops a partly assembled transaction: reading continues after
// the last applied entry.
func (f *follower) restart() {
	f.pending = f.pending[:0]
	f.cursor = f.resume
}

// load reads the newest entries that hold HistorySize events (XREVRANGE,
// a page at a time), resets the hub to the oldest one's p and applies them
// in order.
func (f *follower) load(ctx context.Context) error {
	b := f.b
	c := f.conn(ctx)
	var entries []rueidis.XRangeSlice // newest first
	end, events := "+", 0
	for events < b.cfg.HistorySize {
		cmd := c.B().Xrevrange().Key(b.keys.stream).End(end).Start("-").Count(loadPage).Build()
		page, err := c.Do(ctx, cmd).AsXRangeSlices()
		if err != nil {
			return fmt.Errorf("load history: %w", err)
		}
		for _, e := range page {
			entries = append(entries, e)
			events += max(1, entryEvents(e))
			if events >= b.cfg.HistorySize {
				break
			}
		}
		if len(page) < loadPage {
			break
		}
		end = "(" + page[len(page)-1].ID
	}
	f.loaded, f.cursor, f.resume = true, "0-0", "0-0"
	if len(entries) == 0 {
		return nil
	}
	oldest := entries[len(entries)-1]
	if p, err := parseStreamID(field(oldest.FieldValues, "p")); err == nil {
		b.hub.Reset(p)
		f.applied, f.hasApplied = p, true
	} else {
		f.broken = true // the oldest entry is skipped below; its successor resets
	}
	for i := len(entries) - 1; i >= 0; i-- {
		f.take(entries[i])
	}
	b.log.Info().Int("entries", len(entries)).Int("events", events).Str("newest", entries[0].ID).Msg("loaded history from redis")
	return nil
}

// read takes in one XREAD's entries and says how many there were.
func (f *follower) read(ctx context.Context) (int, error) {
	b := f.b
	entries, ok := f.prefetched()
	if !ok {
		c := f.conn(ctx)
		cmd := c.B().Xread().Count(readCount).Block(b.readBlock.Milliseconds()).Streams().Key(b.keys.stream).Id(f.cursor).Build()
		rctx, cancel := context.WithTimeout(ctx, b.readBlock+readGraceTime)
		defer cancel()
		res, err := c.Do(rctx, cmd).AsXReadSlices()
		if rueidis.IsRedisNil(err) {
			return 0, nil // BLOCK timed out
		}
		if err != nil {
			return 0, fmt.Errorf("xread: %w", err)
		}
		entries = res[b.keys.stream]
	}
	if len(entries) == readCount {
		// A full batch: more is likely waiting. Fetch it while this
		// batch is applied (a node catching up spent a third of its time
		// waiting for replies of a thousand entries).
		f.prefetch(ctx, entries[len(entries)-1].ID)
	}
	for _, e := range entries {
		f.take(e)
	}
	return len(entries), nil
}

// idle runs when the stream had nothing new: it moves this node's position
// up to the flushed watermark W when every entry in the stream is applied,
// so that a quiet cluster (a new one above all, which has no event yet)
// still tells subscribers a position (PROTOCOL 3: <LSN>:0 before the first
// event). W is read before the stream's last id, in one pipeline: every
// entry below W was appended before W was raised, so when the last id is
// applied, nothing below W is missing here.
// It reports whether the stream has entries after the ones applied here.
func (f *follower) idle(ctx context.Context) (behind bool, err error) {
	b := f.b
	if len(f.pending) > 0 || f.broken {
		return true, nil
	}
	c := f.conn(ctx)
	rctx, cancel := context.WithTimeout(ctx, readGraceTime)
	defer cancel()
	res := c.DoMulti(rctx,
		c.B().Get().Key(b.keys.flushed).Build(),
		c.B().Xrevrange().Key(b.keys.stream).End("+").Start("-").Count(1).Build())
	newest, err := res[1].AsXRangeSlices()
	if err != nil {
		return false, fmt.Errorf("read the stream's last entry: %w", err)
	}
	f.setLag(newest)
	ws, err := res[0].ToString()
	if len(newest) > 0 {
		last, err := parseStreamID(newest[0].ID)
		if err != nil || !f.hasApplied || f.applied.Less(last) {
			return true, nil // entries to read first (or an id this node skips anyway)
		}
	}
	if rueidis.IsRedisNil(err) {
		return false, nil // no watermark yet: a new cluster whose leader has not begun
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", b.keys.flushed, err)
	}
	w, err := parseWatermark(ws)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", b.keys.flushed, err)
	}
	base := broker.Position{LSN: w}
	if f.hasApplied && !f.applied.Less(base) {
		return false, nil
	}
	b.hub.Advance(base)
	f.applied, f.hasApplied = base, true
	return false, nil
}

// waitLocal waits up to the BLOCK time for this node's appender to hand
// over transactions (or its session to end); false: nothing came.
func (f *follower) waitLocal(ctx context.Context) bool {
	t := time.NewTimer(f.b.readBlock)
	defer t.Stop()
	select {
	case <-f.b.local.wake:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func field(fv []rueidis.XRangeFieldValue, name string) string {
	for _, x := range fv {
		if x.Field == name {
			return x.Value
		}
	}
	return ""
}

// take assembles one entry's events into their transaction and applies
// the transaction when its last event is in.
func (f *follower) take(e rueidis.XRangeSlice) {
	b := f.b
	en, err := decodeEntry(e, &f.dec)
	if err != nil {
		b.log.Error().Err(err).Str("id", e.ID).Int("bytes", len(field(e.FieldValues, "e"))).
			Msg("REDIS STREAM ENTRY DOES NOT DECODE: skipped; this node resets its history at the next entry and its subscribers resume")
		f.pending = f.pending[:0]
		f.broken = true
		f.cursor, f.resume = e.ID, e.ID
		return
	}
	f.cursor = e.ID
	prev := en.prev
	for _, ev := range en.events {
		f.takeEvent(prev, ev, en.txLen)
		prev = ev.Position
	}
}

// takeEvent assembles one event (prev: the position it directly follows).
func (f *follower) takeEvent(prev broker.Position, ev *broker.Event, last uint32) {
	pos := ev.Position
	if f.hasApplied && !f.applied.Less(pos) {
		return // applied already
	}
	if len(f.pending) > 0 && (pos.LSN != f.pendLast.LSN || prev != f.pendLast) {
		f.b.log.Warn().Str("position", streamID(pos)).Str("p", streamID(prev)).Str("pending_last", streamID(f.pendLast)).
			Msg("stream entry does not continue the transaction being assembled: dropping its incomplete part; this node resets")
		f.pending = f.pending[:0]
		f.broken = true
	}
	if len(f.pending) == 0 {
		f.pendPrev = prev
	}
	f.pending = append(f.pending, ev)
	f.pendLast = pos
	if pos.Index == last {
		f.apply()
	}
}

// apply hands the assembled transaction to the hub, resetting it first
// when the transaction does not directly follow what was applied.
func (f *follower) apply() {
	b := f.b
	prev := f.pendPrev
	// A predecessor at or before what this node applied is continuous: the
	// node has every event up to its position (the leader names a base
	// <LSN>-0 after Redis lost data; when this node had applied past it,
	// nothing is missing here, and the re-appended entries it has already
	// are skipped above).
	if f.broken || (f.hasApplied && f.applied.Less(prev)) {
		metrics.ClusterResets.Inc()
		applied := "none"
		if f.hasApplied {
			applied = streamID(f.applied)
		}
		b.log.Warn().Str("p", streamID(prev)).Str("applied", applied).Bool("skipped_entry", f.broken).
			Msg("discontinuity in the redis stream: resetting this node's history; its subscribers resume with since")
		b.hub.Reset(prev)
		f.broken = false
	}
	evs := make([]*broker.Event, len(f.pending))
	copy(evs, f.pending)
	b.hub.Apply(prev, evs)
	f.applied, f.hasApplied = f.pendLast, true
	f.resume = f.cursor
	f.pending = f.pending[:0]
}
