package cdc

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// lagSink is a recSink whose Durable lags: it never reports past limit
// (as a broker whose appends Redis has not confirmed yet), and fails once
// when told to.
type lagSink struct {
	*recSink
	dmu      sync.Mutex
	limit    uint64
	failNext error
	calls    int // Durable calls
}

func newLagSink(limit uint64) *lagSink { return &lagSink{recSink: newRecSink(), limit: limit} }

func (s *lagSink) Durable(safe uint64) (uint64, error) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.calls++
	if err := s.failNext; err != nil {
		s.failNext = nil
		return 0, err
	}
	return min(safe, s.limit), nil
}

func (s *lagSink) set(limit uint64, fail error) {
	s.dmu.Lock()
	s.limit, s.failNext = limit, fail
	s.dmu.Unlock()
}

func (s *lagSink) durableCalls() int {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return s.calls
}

// beginsAndCalls returns the Begin positions and every call, in order.
func (s *recSink) beginsAndCalls() ([]broker.Position, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]broker.Position(nil), s.begins...), append([]string(nil), s.calls...)
}

func slotConfirmed(t *testing.T, ctx context.Context, url, slot string) uint64 {
	t.Helper()
	conn := connect(t, ctx, url)
	defer conn.Close(ctx)
	c, _ := slotState(t, ctx, conn, slot)
	return c
}

// clusterMode runs a reader without a Checkpoint, as a cluster leader.
func clusterMode(slot string) func(*Config) {
	return func(c *Config) { c.Slot = slot; c.Checkpoint = nil }
}

// In cluster mode (no Checkpoint) every session begins with
// Publisher.Begin(<the slot's confirmed_flush_lsn>:0) before its first
// Append, the acknowledgement follows Durable, and no checkpoint row is
// read or written.
func TestReaderClusterModeBeginsEverySession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot := randomName("slot_")
	sink := newLagSink(0) // nothing durable: the slot stays where it was created
	rr := startReader(t, url, sink, clusterMode(slot))
	rr.waitReady(t, ctx)
	created := slotConfirmed(t, ctx, url, slot)

	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	waitEvents(t, ctx, sink.recSink, 1)
	tx := sink.transactions()[0]
	begins, calls := sink.beginsAndCalls()
	if len(begins) != 1 || begins[0] != (broker.Position{LSN: created}) || calls[0] != "begin" {
		t.Fatalf("first session: Begin calls %v, calls %v; want Begin(%s) before anything else", begins, calls, broker.Position{LSN: created})
	}
	// Durable lets the reader acknowledge exactly the transaction's end.
	sink.set(tx.EndLSN, nil)
	waitFor(t, ctx, "the slot to confirm the transaction", func() bool { return slotConfirmed(t, ctx, url, slot) == tx.EndLSN })

	// A Durable error ends the session; the next one begins at the slot's
	// new confirmed position.
	sink.set(tx.EndLSN, errors.New("redis: append failed"))
	waitFor(t, ctx, "a second session", func() bool { b, _ := sink.beginsAndCalls(); return len(b) == 2 })
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (2)`)
	waitEvents(t, ctx, sink.recSink, 2)
	begins, calls = sink.beginsAndCalls()
	if begins[1] != (broker.Position{LSN: tx.EndLSN}) {
		t.Fatalf("second session: Begin(%s), want Begin(%s), the slot's confirmed position", begins[1], broker.Position{LSN: tx.EndLSN})
	}
	if got := fmt.Sprint(calls); got != "[begin tx begin tx]" {
		t.Fatalf("calls %s, want [begin tx begin tx]", got)
	}
	var rows int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pgrealtime.checkpoint WHERE slot = $1`, slot).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("cluster mode wrote %d checkpoint rows (%v)", rows, err)
	}
	rr.shutdown(t)

	// A checkpoint row (left by a single-node run) is not read: with one
	// far ahead, a reader that read it would skip every transaction. The
	// slot streams row 2 again (never acknowledged: Durable stayed at row
	// 1's transaction), then row 3.
	mustExec(t, ctx, conn, `INSERT INTO pgrealtime.checkpoint (slot, position, delivered, updated_at) VALUES ($1, 'FFFFFFFF/0:1', 'FFFFFFFF/0:1', now())`, slot)
	sink2 := newLagSink(^uint64(0))
	rr2 := startReader(t, url, sink2, clusterMode(slot))
	rr2.waitReady(t, ctx)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (3)`)
	if evs := waitEvents(t, ctx, sink2.recSink, 2); evs[0].RecordID != "2" || evs[1].RecordID != "3" {
		t.Fatalf("restarted reader published %s, %s first, want 2, 3", evs[0].RecordID, evs[1].RecordID)
	}
	if b, _ := sink2.beginsAndCalls(); len(b) != 1 || b[0].LSN < tx.EndLSN || b[0].Index != 0 {
		t.Fatalf("restarted reader: Begin calls %v, want one at the slot's position (at least %s)", b, pglogrepl.LSN(tx.EndLSN))
	}
	rr2.shutdown(t)
	var pos string
	if err := conn.QueryRow(ctx, `SELECT position FROM pgrealtime.checkpoint WHERE slot = $1`, slot).Scan(&pos); err != nil || pos != "FFFFFFFF/0:1" {
		t.Fatalf("checkpoint row is %q (%v): cluster mode wrote it", pos, err)
	}
}

// The reader acknowledges no further than Durable reports, and because it
// asks at every status tick, the acknowledgement catches up while the
// stream is idle once Durable moves.
func TestReaderAcknowledgesOnlyWhatIsDurable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot := randomName("slot_")
	sink := newLagSink(0)
	rr := startReader(t, url, sink, clusterMode(slot))
	rr.waitReady(t, ctx)
	created := slotConfirmed(t, ctx, url, slot)

	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	waitEvents(t, ctx, sink.recSink, 1)
	tx := sink.transactions()[0]
	n := sink.durableCalls()
	waitFor(t, ctx, "three more status ticks", func() bool { return sink.durableCalls() >= n+3 })
	if got := slotConfirmed(t, ctx, url, slot); got != created {
		t.Fatalf("slot confirmed %s while Durable reported nothing; want it still at %s", pglogrepl.LSN(got), pglogrepl.LSN(created))
	}
	sink.set(^uint64(0), nil)
	waitFor(t, ctx, "the idle stream's acknowledgement to pass the transaction", func() bool {
		return slotConfirmed(t, ctx, url, slot) >= tx.EndLSN
	})
}

// blockingSink's Append blocks (backpressure) until a moment hold after
// the first call, or until its context ends.
type blockingSink struct {
	*recSink
	hold    time.Duration
	bmu     sync.Mutex
	until   time.Time
	appends int
}

func (s *blockingSink) Append(ctx context.Context, tx *broker.Tx) error {
	s.bmu.Lock()
	s.appends++
	if s.until.IsZero() {
		s.until = time.Now().Add(s.hold)
	}
	until := s.until
	s.bmu.Unlock()
	tm := time.NewTimer(time.Until(until))
	defer tm.Stop()
	select {
	case <-tm.C: // the broker's own backpressure ends, not a test waiting
		return s.recSink.Append(ctx, tx)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *blockingSink) appendCalls() int {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	return s.appends
}

// While Append is blocked for three times wal_sender_timeout, the reader
// keeps sending standby status (Append has a deadline of one status
// interval and is retried), so the server never ends the session.
func TestReaderStaysConnectedWhileAppendBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot := randomName("slot_")
	sink := &blockingSink{recSink: newRecSink(), hold: 3 * time.Second}
	rr := startReader(t, withSenderTimeout(url, "1s"), sink, func(c *Config) {
		clusterMode(slot)(c)
		c.StatusInterval = 200 * time.Millisecond
	})
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	waitEvents(t, ctx, sink.recSink, 1)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (2)`)
	waitEvents(t, ctx, sink.recSink, 2)
	if got := sink.appendCalls(); got < 5 {
		t.Errorf("Append called %d times for a 3 s block with a 200 ms status interval, want it retried after each interval", got)
	}
	if b, _ := sink.beginsAndCalls(); len(b) != 1 {
		t.Fatalf("%d sessions: the server ended the session while Append was blocked", len(b))
	}
	if evs := sink.events(); len(evs) != 2 || evs[0].RecordID != "1" || evs[1].RecordID != "2" {
		t.Fatalf("events %v", evs)
	}
}

// withSenderTimeout sets wal_sender_timeout for the connections of u (a
// URL or a key=value DSN).
func withSenderTimeout(u, timeout string) string {
	opt := "-c wal_sender_timeout=" + timeout
	if !strings.Contains(u, "://") {
		return u + " options='" + opt + "'"
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "options=" + strings.ReplaceAll(url.QueryEscape(opt), "+", "%20")
}

// In cluster mode a session that ends before its appends were durable
// leaves them to the next session: the slot streams them again and the
// reader hands them to Append again (the Publisher, not the reader, knows
// what Redis kept). Without this, a Redis that lost its data took the
// unacknowledged transactions with it, silently.
func TestReaderClusterModeAppendsAgainWhatWasNotDurable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot := randomName("slot_")
	sink := newLagSink(0) // nothing durable
	rr := startReader(t, url, sink, clusterMode(slot))
	rr.waitReady(t, ctx)

	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	waitEvents(t, ctx, sink.recSink, 1)
	first := sink.transactions()[0]
	// The session fails (Redis lost the append); nothing was acknowledged.
	sink.set(0, errors.New("redis: connection lost"))
	waitFor(t, ctx, "a second session", func() bool { b, _ := sink.beginsAndCalls(); return len(b) == 2 })
	waitFor(t, ctx, "the transaction appended again", func() bool {
		txs := sink.transactions()
		return len(txs) >= 2 && txs[len(txs)-1].CommitLSN == first.CommitLSN
	})
	_, calls := sink.beginsAndCalls()
	if got := fmt.Sprint(calls); got != "[begin tx begin tx]" {
		t.Fatalf("calls %s, want [begin tx begin tx]: the unacknowledged transaction appended again", got)
	}
	rr.shutdown(t)
}
