package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
)

// Batch bounds: a batch takes whole transactions until one of these is
// reached (at least one transaction).
const (
	maxBatchEntries = 4096
	maxBatchBytes   = 8 << 20
)

// idleWatermarkEvery bounds the watermark-only batches that Durable asks
// for when nothing is unconfirmed.
const idleWatermarkEvery = time.Second

var (
	errNoSession    = errors.New("redisbroker: Append or Durable before Begin")
	errSessionEnded = errors.New("redisbroker: the append session ended (Begin or Close was called)")
)

// appender is the leader's side: one append session per Begin, one
// goroutine per session sending group-committed batches.
type appender struct {
	b  *Broker
	mu sync.Mutex
	s  *session // nil before Begin and after Close
}

// txItem is one transaction's encoded entries.
type txItem struct {
	commit   uint64
	ids      []broker.Position // each entry's id: its last event's position
	counts   []int             // each entry's events
	payloads [][]byte
	size     int
	events   []*broker.Event // the events encoded, for this node's own fan-out
	prev     broker.Position // p of its first entry (set by send)
}

// session is one Begin's state.
type session struct {
	sha     string // SHA-1 of raiseWatermark
	dc      rueidis.DedicatedClient
	release func()
	from    uint64
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}

	// Guarded by appender.mu.
	skip     broker.Position // Append skips events at or before it
	queue    []*txItem       // not sent yet
	inflight []*txItem       // in the batch being sent
	bytes    int             // payload bytes queued or in flight
	wantW    uint64          // watermark to write next
	confW    uint64          // watermark Redis confirmed
	lastIdle time.Time       // last watermark-only batch
	err      error           // the failure that ended the session
	changed  chan struct{}   // closed and replaced on every change

	// Appender goroutine only.
	prev    broker.Position // p of the next entry
	floor   broker.Position // the later of the first p and the stream's last id at Begin (local.go)
	waitAOF bool
	recent  []batchCount // batches sent within the trim grace
	kept    keptEntries  // the newest entries' event counts, for XTRIM
}

func (a *appender) start(s *session) {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	s.wake = make(chan struct{}, 1)
	s.changed = make(chan struct{})
	a.mu.Lock()
	a.s = s
	a.mu.Unlock()
	a.b.local.begin(s.floor)
	go a.run(s)
}

// end stops the current session, if any, dropping what it has not sent.
func (a *appender) end() {
	a.mu.Lock()
	s := a.s
	a.s = nil
	if s != nil {
		a.notify(s)
	}
	a.mu.Unlock()
	if s != nil {
		a.b.local.end()
		s.cancel()
		// A batch on the dedicated connection may wait for its replies
		// beyond its ctx, and releasing the connection waits for Redis too;
		// closing it ends both within about a second when Redis does not
		// answer. The next session dials a new one.
		s.dc.Close()
		<-s.done
		s.release()
	}
}

// End ends the append session, if any, dropping what it has not sent
// (the reader streams it again from its acknowledgement wherever it runs
// next). cmd calls it when the node stops leading, so that its follower
// reads the next leader's entries from the stream at once.
func (b *Broker) End() { b.app.end() }

// notify wakes everyone waiting on s.changed (a.mu held).
func (a *appender) notify(s *session) {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// noSession is the error of Append and Durable without a session.
func (b *Broker) noSession() error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	return errNoSession
}

// Append queues one committed transaction for the next batch, skipping
// events at or before what the stream or this session has already. It
// blocks while MaxQueueBytes of payload are queued or in flight, until
// ctx ends. An error means the session failed: Begin again.
func (b *Broker) Append(ctx context.Context, tx *broker.Tx) error {
	a := &b.app
	a.mu.Lock()
	s := a.s
	var skip broker.Position
	if s != nil {
		skip = s.skip
	}
	a.mu.Unlock()
	if s == nil {
		return b.noSession()
	}
	item, err := b.encodeTx(tx, skip)
	if err != nil || item == nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		switch {
		case a.s != s:
			return errSessionEnded
		case s.err != nil:
			return s.err
		case !s.skip.Less(item.ids[0]):
			return nil // a concurrent Append queued it
		}
		if s.bytes == 0 || s.bytes+item.size <= b.queueLimit {
			break
		}
		ch := s.changed
		a.mu.Unlock()
		select {
		case <-ch:
			a.mu.Lock()
		case <-ctx.Done():
			a.mu.Lock()
			return fmt.Errorf("append: %d bytes queued for redis: %w", s.bytes, ctx.Err())
		}
	}
	s.queue = append(s.queue, item)
	s.bytes += item.size
	s.skip = item.ids[len(item.ids)-1]
	s.poke()
	return nil
}

// encodeTx encodes tx's events after skip into stream entries (entry.go).
// An event's transaction length is the index of the transaction's last
// encodable event (an event the codec refuses is logged and dropped, as
// broker.Memory drops an event it cannot encode), so every leader computes
// the same events; how they are grouped into entries does not matter to
// the readers.
func (b *Broker) encodeTx(tx *broker.Tx, skip broker.Position) (*txItem, error) {
	if len(tx.Events) == 0 {
		return nil, nil
	}
	last, first := broker.Position{}, len(tx.Events)
	for i, ev := range tx.Events {
		if ev.Position.LSN != tx.CommitLSN || ev.Position.Index == 0 || !last.Less(ev.Position) {
			return nil, fmt.Errorf("append: event %d of the transaction committed at %X has position %s: want %X:<index from 1, increasing>", i+1, tx.CommitLSN, ev.Position, tx.CommitLSN)
		}
		last = ev.Position
		if first == len(tx.Events) && skip.Less(ev.Position) {
			first = i
		}
	}
	evs := tx.Events[first:] // positions increase: the events after skip
	if len(evs) == 0 {
		return nil, nil
	}
	txLen := tx.Events[len(tx.Events)-1].Position.Index
	eb := builders.Get().(*entryBuilder)
	defer builders.Put(eb)
	kept, dropped := evs, false // kept: the events encoded (a copy only when one is dropped)
	for attempt := 0; attempt < 2; attempt++ {
		eb.reset()
		kept, dropped = evs, false
		var lastOK broker.Position
		for j, ev := range evs {
			if err := eb.add(ev, int(txLen)); err != nil {
				if attempt == 0 {
					b.log.Error().Err(err).Str("position", ev.Position.String()).Msg("dropping event that cannot be encoded for redis")
				}
				if !dropped {
					kept, dropped = slices.Clone(evs[:j]), true
				}
				continue
			}
			lastOK = ev.Position
			if dropped {
				kept = append(kept, ev)
			}
		}
		eb.close()
		if len(eb.ids) == 0 {
			return nil, nil
		}
		if lastOK.Index != txLen {
			txLen = lastOK.Index // the tail was dropped: its new last event ends it
			continue
		}
		break
	}
	return &txItem{
		commit: tx.CommitLSN, ids: slices.Clone(eb.ids), counts: slices.Clone(eb.counts),
		payloads: eb.payloads(), size: len(eb.buf), events: kept,
	}, nil
}

// builders reuses entry builders' buffers across transactions.
var builders = sync.Pool{New: func() any { return new(entryBuilder) }}

// Durable reports how far the reader may acknowledge (docs/cluster.md
// section 7): safe when nothing appended is unconfirmed, else the commit
// LSN of the oldest unconfirmed transaction; never past the watermark
// Redis confirmed (but at least the session's from, which Postgres has
// confirmed already). With nothing unconfirmed it asks, at most once a
// second, for a watermark-only batch so that an idle slot keeps moving.
// An error is the failure that ended the session: Begin again.
func (b *Broker) Durable(safe uint64) (uint64, error) {
	a := &b.app
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.s
	switch {
	case s == nil:
		return 0, b.noSession()
	case s.err != nil:
		return 0, s.err
	}
	cand, unconfirmed := safe, false
	if len(s.inflight) > 0 {
		cand, unconfirmed = min(cand, s.inflight[0].commit), true
	} else if len(s.queue) > 0 {
		cand, unconfirmed = min(cand, s.queue[0].commit), true
	}
	if cand > s.wantW {
		s.wantW = cand
	}
	if !unconfirmed && s.wantW > s.confW && time.Since(s.lastIdle) >= b.idleEvery {
		s.poke()
	}
	return max(min(cand, s.confW), min(s.from, cand)), nil
}

// run is the session's appender goroutine.
func (a *appender) run(s *session) {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
		for {
			batch, w, ok := a.take(s)
			if !ok {
				break
			}
			refused, err := a.b.send(s, batch, w)
			a.finish(s, batch, w, err)
			if err == nil {
				a.confirmed(s, batch, refused)
			}
			if err != nil {
				return
			}
		}
	}
}

// take moves the next batch from the queue to in flight and returns it
// with the watermark it may write: everything below w is in this batch or
// confirmed before it.
func (a *appender) take(s *session) (batch []*txItem, w uint64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.err != nil || a.s != s {
		return nil, 0, false
	}
	n, entries, size := 0, 0, 0
	for n < len(s.queue) && (n == 0 || (entries+len(s.queue[n].ids) <= maxBatchEntries && size+s.queue[n].size <= maxBatchBytes)) {
		entries += len(s.queue[n].ids)
		size += s.queue[n].size
		n++
	}
	w = s.wantW
	if n < len(s.queue) {
		w = min(w, s.queue[n].commit)
	}
	switch {
	case n > 0:
		batch = s.queue[:n:n]
		s.queue = s.queue[n:]
		s.inflight = batch
		return batch, w, true
	case w > s.confW && time.Since(s.lastIdle) >= a.b.idleEvery:
		s.lastIdle = time.Now()
		return nil, w, true
	}
	return nil, 0, false
}

// confirmed hands a batch Redis accepted to this node's follower loop
// (local.go); a batch of which Redis refused entries (appended already by
// another leader) is not handed over: the follower reads the stream.
func (a *appender) confirmed(s *session, batch []*txItem, refused bool) {
	if refused {
		a.b.local.missed()
		return
	}
	txs := make([]localTx, 0, len(batch))
	for _, it := range batch {
		txs = append(txs, localTx{prev: it.prev, last: it.ids[len(it.ids)-1], floor: s.floor, events: it.events, size: it.size})
	}
	a.b.local.push(txs)
}

// finish records a batch's outcome.
func (a *appender) finish(s *session, batch []*txItem, w uint64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		s.err = fmt.Errorf("append to redis: %w", err)
		if s.ctx.Err() == nil {
			a.b.log.Error().Err(err).Msg("append batch failed: the session ends; the reader streams again from its last acknowledgement")
		}
	} else {
		s.inflight = nil
		for _, it := range batch {
			s.bytes -= it.size
		}
		s.confW = max(s.confW, w)
	}
	a.notify(s)
}
