package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
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
	ids      []broker.Position
	payloads [][]byte
	size     int
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
	waitAOF bool
	recent  []batchCount // batches sent within the trim grace
}

// batchCount is how many entries a batch appended, and when.
type batchCount struct {
	at time.Time
	n  int
}

// recentEntries records a batch of n entries and returns how many entries
// were appended within grace (this batch included). The stream keeps them
// on top of HistorySize, so that trimming overtakes only a node that is
// more than grace behind: trimmed right after the XADDs to HistorySize, a
// burst larger than it (one big transaction) would overtake every node,
// the leader's own included, and reset them all.
func (s *session) recentEntries(n int, grace time.Duration) int {
	now := time.Now()
	i := 0
	for i < len(s.recent) && now.Sub(s.recent[i].at) > grace {
		i++
	}
	s.recent = append(s.recent[i:], batchCount{now, n})
	sum := 0
	for _, c := range s.recent {
		sum += c.n
	}
	return sum
}

func (a *appender) start(s *session) {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	s.wake = make(chan struct{}, 1)
	s.changed = make(chan struct{})
	a.mu.Lock()
	a.s = s
	a.mu.Unlock()
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

// encodeTx encodes tx's events after skip. An entry's transaction length
// is the index of the transaction's last encodable event (an event the
// codec refuses is logged and dropped, as broker.Memory drops an event it
// cannot encode), so every leader computes the same entries.
func (b *Broker) encodeTx(tx *broker.Tx, skip broker.Position) (*txItem, error) {
	if len(tx.Events) == 0 {
		return nil, nil
	}
	var evs []*broker.Event
	last := broker.Position{}
	for i, ev := range tx.Events {
		if ev.Position.LSN != tx.CommitLSN || ev.Position.Index == 0 || !last.Less(ev.Position) {
			return nil, fmt.Errorf("append: event %d of the transaction committed at %X has position %s: want %X:<index from 1, increasing>", i+1, tx.CommitLSN, ev.Position, tx.CommitLSN)
		}
		last = ev.Position
		if skip.Less(ev.Position) {
			evs = append(evs, ev)
		}
	}
	if len(evs) == 0 {
		return nil, nil
	}
	txLen := tx.Events[len(tx.Events)-1].Position.Index
	item := &txItem{commit: tx.CommitLSN}
	for attempt := 0; attempt < 2; attempt++ {
		item.ids, item.payloads, item.size = item.ids[:0], item.payloads[:0], 0
		for _, ev := range evs {
			p, err := broker.AppendBinary(nil, ev, int(txLen))
			if err != nil {
				if attempt == 0 {
					b.log.Error().Err(err).Str("position", ev.Position.String()).Msg("dropping event that cannot be encoded for redis")
				}
				continue
			}
			item.ids = append(item.ids, ev.Position)
			item.payloads = append(item.payloads, p)
			item.size += len(p)
		}
		if len(item.ids) == 0 {
			return nil, nil
		}
		if l := item.ids[len(item.ids)-1].Index; l != txLen {
			txLen = l // the tail was dropped: its new last entry ends it
			continue
		}
		break
	}
	return item, nil
}

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
			err := a.b.send(s, batch, w)
			a.finish(s, batch, w, err)
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

// send writes one batch in one round trip on the session's dedicated
// connection: the XADDs in position order, XTRIM, the watermark script,
// and WAITAOF when the server has it.
func (b *Broker) send(s *session, batch []*txItem, w uint64) error {
	k, dc := b.keys, s.dc
	var cmds rueidis.Commands
	var ids []broker.Position
	prev := s.prev
	for _, it := range batch {
		for j, id := range it.ids {
			sid := streamID(id)
			cmds = append(cmds, dc.B().Xadd().Key(k.stream).Id(sid).FieldValue().
				FieldValue("p", streamID(prev)).FieldValue("e", rueidis.BinaryString(it.payloads[j])).Build())
			ids = append(ids, id)
			prev = id
		}
	}
	nx := len(cmds)
	if nx > 0 {
		keep := b.cfg.HistorySize + s.recentEntries(nx, b.trimGrace)
		cmds = append(cmds, dc.B().Xtrim().Key(k.stream).Maxlen().Almost().Threshold(strconv.Itoa(keep)).Build())
	}
	iw := -1
	if w > 0 {
		iw = len(cmds)
		cmds = append(cmds, dc.B().Evalsha().Sha1(s.sha).Numkeys(1).Key(k.flushed).Arg(watermarkText(w)).Build())
	}
	ia := -1
	if s.waitAOF {
		ia = len(cmds)
		cmds = append(cmds, dc.B().Waitaof().Numlocal(1).Numreplicas(0).Timeout(1000).Build())
	}
	start := time.Now()
	res := dc.DoMulti(s.ctx, cmds...)
	metrics.RedisBatchSeconds.Observe(time.Since(start).Seconds())

	var refused broker.Position
	appended := 0
	for i := 0; i < nx; i++ {
		err := res[i].Error()
		switch {
		case err == nil:
			appended++
		case strings.Contains(err.Error(), "equal or smaller"):
			if refused.Less(ids[i]) {
				refused = ids[i]
			}
		default:
			return fmt.Errorf("xadd %s: %w", streamID(ids[i]), err)
		}
	}
	metrics.RedisAppendedEvents.Add(float64(appended))
	if nx > 0 {
		if err := res[nx].Error(); err != nil {
			return fmt.Errorf("xtrim: %w", err)
		}
	}
	if iw >= 0 {
		if err := res[iw].Error(); err != nil {
			if re, ok := rueidis.IsRedisErr(err); !ok || !re.IsNoScript() {
				return fmt.Errorf("raise watermark: %w", err)
			}
			// The server lost its script cache (a restart): EVAL once.
			if err := dc.Do(s.ctx, dc.B().Eval().Script(raiseWatermark).Numkeys(1).Key(k.flushed).Arg(watermarkText(w)).Build()).Error(); err != nil {
				return fmt.Errorf("raise watermark: %w", err)
			}
		}
	}
	if ia >= 0 {
		if err := b.checkWaitAOF(s, res[ia]); err != nil {
			return err
		}
	}
	if !refused.IsZero() {
		// Section 5: an id Redis refuses is there already if the stream's
		// last id is at or after it (same position, same content).
		last, _, err := lastID(s.ctx, dc, k.stream)
		if err != nil {
			return err
		}
		if last.Less(refused) {
			return fmt.Errorf("redis refused entry %s as not after the stream's last id, but the last id is %s: another appender interfered", streamID(refused), streamID(last))
		}
		b.log.Warn().Str("refused", streamID(refused)).Str("stream_last", streamID(last)).Msg("redis refused entries that the stream has already (another leader appended them): continuing after them")
		if prev.Less(last) {
			prev = last
		}
	}
	s.prev = prev
	return nil
}

// checkWaitAOF checks WAITAOF's reply: the batch is on the server's disk.
func (b *Broker) checkWaitAOF(s *session, r rueidis.RedisResult) error {
	v, err := r.AsIntSlice()
	if err != nil {
		if strings.Contains(err.Error(), "appendonly is disabled") || strings.Contains(err.Error(), "unknown command") {
			s.waitAOF = false
			b.log.Warn().Err(err).Msg("redis can no longer confirm appends on disk: acknowledging what Redis accepted")
			return nil
		}
		return fmt.Errorf("waitaof: %w", err)
	}
	if len(v) < 1 || v[0] < 1 {
		return errors.New("waitaof: redis did not write the batch to its append-only file within 1 s")
	}
	return nil
}
