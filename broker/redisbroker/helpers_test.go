package redisbroker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// waitTimeout bounds every wait of these tests (a busy 2-core machine).
const waitTimeout = 30 * time.Second

// recorder is a recording applier: what the follower and live loops hand
// to the local fan-out, with broker.Hub's rules for Apply (a transaction at
// or before the last position is ignored; a prev that does not match is
// recorded as an implicit reset, which the follower must never cause).
type recorder struct {
	mu       sync.Mutex
	last     broker.Position
	hasLast  bool
	events   []*broker.Event // applied, in order
	prevs    []broker.Position
	txs      [][]broker.Position // each Apply's positions
	resets   []broker.Position
	advances []broker.Position
	implicit []string // Apply calls whose prev did not match without a Reset
	lives    []*broker.Event
	changed  chan struct{}
	onApply  func(evs []*broker.Event) // benchmarks: called in Apply
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) Apply(prev broker.Position, evs []*broker.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(evs) == 0 || (r.hasLast && !r.last.Less(evs[0].Position)) {
		return
	}
	if r.hasLast && r.last.Less(prev) {
		r.implicit = append(r.implicit, fmt.Sprintf("apply prev %s after %s", prev, r.last))
	}
	var ps []broker.Position
	for _, ev := range evs {
		r.events = append(r.events, ev)
		ps = append(ps, ev.Position)
	}
	r.prevs = append(r.prevs, prev)
	r.txs = append(r.txs, ps)
	r.last, r.hasLast = evs[len(evs)-1].Position, true
	if r.onApply != nil {
		r.onApply(evs)
	}
	r.notify()
}

func (r *recorder) ApplyLive(ev *broker.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lives = append(r.lives, ev)
	r.notify()
}

func (r *recorder) Reset(pos broker.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets = append(r.resets, pos)
	r.last, r.hasLast = pos, true
	r.notify()
}

func (r *recorder) Advance(pos broker.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.Less(pos) {
		r.advances = append(r.advances, pos)
		r.last, r.hasLast = pos, true
		r.notify()
	}
}

func (r *recorder) Position() broker.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// wait waits until cond (called with r.mu held) holds.
func (r *recorder) wait(t testing.TB, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := cond(r), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; applied %v, resets %v", what, posList(r.events), r.resets)
		}
	}
}

// waitPos waits until the recorder applied pos.
func (r *recorder) waitPos(t testing.TB, pos broker.Position) {
	t.Helper()
	r.wait(t, "position "+pos.String(), func(r *recorder) bool { return r.hasLast && !r.last.Less(pos) })
}

func (r *recorder) snapshot() (events []broker.Position, resets []broker.Position, implicit []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return posList(r.events), append([]broker.Position(nil), r.resets...), append([]string(nil), r.implicit...)
}

func posList(evs []*broker.Event) []broker.Position {
	out := make([]broker.Position, len(evs))
	for i, ev := range evs {
		out[i] = ev.Position
	}
	return out
}

// newClient is a client as cmd makes it: ParseURL + DisableCache.
func newClient(t testing.TB, srv *redistest.Server) rueidis.Client {
	t.Helper()
	opt, err := rueidis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

const testSlot = "test"

// node is one Broker on its own client with a recorder, running until the
// test ends.
type node struct {
	b   *Broker
	rec *recorder
	c   rueidis.Client
}

type nodeOpt func(*Config, *Broker)

// heldUntil holds the node's follower loop before each read (after its
// history load) until gate is closed.
func heldUntil(gate <-chan struct{}) nodeOpt {
	return func(_ *Config, br *Broker) {
		br.beforeRead = func(ctx context.Context) {
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
	}
}

func startNode(t testing.TB, srv *redistest.Server, history int, opts ...nodeOpt) *node {
	t.Helper()
	c := newClient(t, srv)
	rec := newRecorder()
	cfg := Config{Client: c, Slot: testSlot, HistorySize: history, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	b, err := newBroker(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	b.idleEvery = 10 * time.Millisecond
	for _, o := range opts {
		o(&b.cfg, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = b.Close()
	})
	n := &node{b: b, rec: rec, c: c}
	n.waitReady(t)
	return n
}

// waitReady waits until Ready is nil.
func (n *node) waitReady(t testing.TB) {
	t.Helper()
	waitUntil(t, "the broker is ready", func() (bool, string) {
		err := n.b.Ready()
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// waitUntil polls cond (every 5 ms) until it holds; it is for state that
// has no change notification (Ready, Durable).
func waitUntil(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s: %s", what, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tx builds a transaction at commit LSN lsn with n events.
func tx(lsn uint64, n int) *broker.Tx {
	t := &broker.Tx{CommitLSN: lsn, EndLSN: lsn + 8, CommitTime: time.Unix(1700000000, 0).UTC()}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("%d-%d", lsn, i)
		t.Events = append(t.Events, &broker.Event{
			Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionCreate, RecordID: id,
			Record:    broker.Row{{Name: "id", Value: id}, {Name: "n", Value: int64(i)}},
			Timestamp: t.CommitTime, Position: broker.Position{LSN: lsn, Index: uint32(i)},
		})
	}
	return t
}

// txPositions lists the positions of txs' events.
func txPositions(txs ...*broker.Tx) []broker.Position {
	var out []broker.Position
	for _, t := range txs {
		out = append(out, posList(t.Events)...)
	}
	return out
}

// reader plays the WAL reader: it appends transactions and acknowledges
// what Durable allows; after an error it begins again from its last
// acknowledgement and streams again every transaction after it, as the
// slot does.
type reader struct {
	b     *Broker
	acked uint64 // confirmed_flush_lsn
	begun bool
	log   []string // errors seen
}

func newReader(b *Broker, from uint64) *reader { return &reader{b: b, acked: from} }

// publish streams txs (a WAL in commit order) until every one is acknowledged.
func (r *reader) publish(t testing.TB, txs ...*broker.Tx) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	end := txs[len(txs)-1].EndLSN
	for ctx.Err() == nil {
		if err := r.session(ctx, txs, end); err == nil {
			return
		} else {
			r.log = append(r.log, err.Error())
			r.begun = false
			time.Sleep(20 * time.Millisecond) // the reader's reconnect backoff
		}
	}
	t.Fatalf("reader: transactions not acknowledged up to %X within %s (acked %X); errors: %s", end, waitTimeout, r.acked, strings.Join(r.log, "; "))
}

func (r *reader) session(ctx context.Context, txs []*broker.Tx, end uint64) error {
	if !r.begun {
		if err := r.b.Begin(ctx, broker.Position{LSN: r.acked}); err != nil {
			return err
		}
		r.begun = true
		// The slot streams again every transaction not acknowledged.
		for _, tx := range txs {
			if tx.CommitLSN >= r.acked {
				if err := r.b.Append(ctx, tx); err != nil {
					return err
				}
			}
		}
	} else {
		for _, tx := range txs {
			if err := r.b.Append(ctx, tx); err != nil {
				return err
			}
		}
	}
	for ctx.Err() == nil {
		d, err := r.b.Durable(end)
		if err != nil {
			return err
		}
		if d < r.acked {
			return fmt.Errorf("Durable went back from %X to %X", r.acked, d)
		}
		r.acked = d
		if d >= end {
			return nil
		}
		time.Sleep(5 * time.Millisecond) // the reader's status tick, shortened
	}
	return ctx.Err()
}

// xadd writes one entry as a leader would (tests that play a dead or
// foreign leader).
func xadd(t testing.TB, c rueidis.Client, ev *broker.Event, txLen int, prev broker.Position) {
	t.Helper()
	var eb entryBuilder
	if err := eb.add(ev, txLen); err != nil {
		t.Fatal(err)
	}
	eb.close()
	xaddRaw(t, c, streamID(ev.Position), streamID(prev), string(eb.payloads()[0]))
}

func xaddRaw(t testing.TB, c rueidis.Client, id, prev, payload string) {
	t.Helper()
	cmd := c.B().Xadd().Key(newKeys(testSlot).stream).Id(id).FieldValue().FieldValue("p", prev).FieldValue("e", payload).Build()
	if err := c.Do(context.Background(), cmd).Error(); err != nil {
		t.Fatalf("xadd %s: %v", id, err)
	}
}
