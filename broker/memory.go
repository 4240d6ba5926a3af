package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/rs/zerolog"
)

// DefaultHistorySize is the number of events Memory retains for resume.
const DefaultHistorySize = 10000

// Config configures a Memory broker.
type Config struct {
	// HistorySize is how many WAL events are retained for Subscribe with
	// since. 0 keeps none (a subscriber can then resume only from the last
	// published position).
	HistorySize int
	// Prepare, when set, runs once per event before it is retained and
	// fanned out (rules: omit columns, per-event evaluation). Returning
	// false drops the event: never retained, never delivered.
	Prepare func(*Event) bool
	// Logger; default zerolog.Nop().
	Logger zerolog.Logger
}

// Memory is the in-process Broker. All state is guarded by one mutex;
// Deliver and DeliverBatch are called with it held, which is why they must not
// block. Encoding and Prepare run before the lock is taken.
type Memory struct {
	cfg Config
	log zerolog.Logger

	mu       sync.Mutex
	index    map[topicKey]map[*member]struct{} // unfiltered subscriptions
	filtered map[topicKey]*filterGroup         // filtered subscriptions
	members  map[Subscriber]*member
	seq      uint64    // fan-out sequence, for one delivery per member per event
	batchSeq uint64    // multi-event transaction sequence
	touched  []*member // reused by fanoutBatchLocked

	history   []*Event // ring buffer of retained WAL events
	histStart int      // index of the oldest retained event
	histLen   int
	base      Position // every event up to base was published, and all after it are retained
	baseKnown bool
	last      Position // last WAL event published (or base)
	delivered Position // events up to here were delivered by an earlier run
	lastLSN   uint64   // CommitLSN of the last published transaction
	// changed is closed when the stream moves; nil while nobody waits
	// for that (made by the first waiter).
	changed chan struct{}
	closed  bool
}

var _ Broker = (*Memory)(nil)

// patternSet is a member's patterns with their positions: a slice, not a
// map, because most subscribers hold one to three patterns (a map costs
// each idle subscriber several hundred bytes, and a short scan is faster).
type patternSet []patternFrom

type patternFrom struct {
	key  subKey
	f    *Filters // nil for an unfiltered pattern
	from Position
}

// matches reports whether the pattern matches ev (filters included).
func (p *patternFrom) matches(ev *Event, er *eventRow) bool {
	if !keyMatches(p.key.topicKey, ev) {
		return false
	}
	if p.f == nil {
		return true
	}
	row, all := er.get()
	return all || p.f.matchRow(row)
}

func (ps patternSet) get(k subKey) (Position, bool) {
	for i := range ps {
		if ps[i].key == k {
			return ps[i].from, true
		}
	}
	return Position{}, false
}

func (ps patternSet) has(k subKey) bool {
	_, ok := ps.get(k)
	return ok
}

func (ps patternSet) find(k subKey) int {
	for i := range ps {
		if ps[i].key == k {
			return i
		}
	}
	return -1
}

func (ps patternSet) without(k subKey) patternSet {
	for i := range ps {
		if ps[i].key == k {
			return slices.Delete(ps, i, i+1)
		}
	}
	return ps
}

// member is one subscriber's state.
type member struct {
	sub Subscriber
	// patterns maps each pattern to the position after which it delivers
	// (the since it was replayed from, or the last position when it was
	// added live), so that a later resume replays exactly what no existing
	// pattern delivered.
	patterns patternSet
	lastSeq  uint64
	batchSeq uint64   // transaction batch being collected in batch
	batch    []*Event // events of the current multi-event transaction
}

// topicKey indexes subscriptions: {"",""} is "*", {c,""} a collection,
// {c,id} a record.
type topicKey struct{ coll, id string }

// subKey identifies a pattern: its topic key and its filters as written.
type subKey struct {
	topicKey
	filter string
}

func keyOf(p Pattern) subKey {
	k := subKey{}
	if !p.All {
		k.topicKey = topicKey{p.Collection, p.ID}
	}
	if p.Filters != nil {
		k.filter = p.Filters.Text
	}
	return k
}

// NewMemory returns an in-process broker.
func NewMemory(cfg Config) *Memory {
	if cfg.HistorySize < 0 {
		cfg.HistorySize = 0
	}
	return &Memory{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "broker").Logger(),
		index:    make(map[topicKey]map[*member]struct{}),
		filtered: make(map[topicKey]*filterGroup),
		members:  make(map[Subscriber]*member),
		history:  make([]*Event, cfg.HistorySize),
	}
}

// prepare runs the Prepare hook and encodes the event; false drops it.
func (m *Memory) prepare(ev *Event) (bool, error) {
	if m.cfg.Prepare != nil && !m.cfg.Prepare(ev) {
		return false, nil
	}
	b, err := ev.Encode()
	if err != nil {
		return false, fmt.Errorf("encode %s event of %s: %w", ev.Action, ev.Collection, err)
	}
	ev.JSON = b
	return true, nil
}

// Publish implements Broker.
func (m *Memory) Publish(ctx context.Context, tx *Tx) error {
	m.mu.Lock()
	dup := m.closed || (m.lastLSN != 0 && tx.CommitLSN <= m.lastLSN)
	closed := m.closed
	base, baseKnown := m.base, m.baseKnown
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if dup {
		m.log.Debug().Uint64("commit_lsn", tx.CommitLSN).Msg("ignoring transaction already published")
		return nil
	}
	// evs is tx.Events itself until an event is left out (no copy in the
	// common case).
	evs := tx.Events[:0:0]
	for i, ev := range tx.Events {
		keep := !baseKnown || base.Less(ev.Position) // else published by an earlier run before the base: out of the window
		if keep {
			ok, err := m.prepare(ev)
			if err != nil {
				// An event that cannot be encoded is a bug in a value
				// conversion; refusing the transaction would stall the WAL.
				m.log.Error().Err(err).Str("position", ev.Position.String()).Msg("dropping event that cannot be encoded")
			}
			keep = ok && err == nil
		}
		switch {
		case keep && len(evs) == i:
			evs = tx.Events[:i+1]
		case keep:
			evs = append(evs, ev)
		case len(evs) == i:
			// The first event left out: copy the ones kept so far.
			evs = append(make([]*Event, 0, len(tx.Events)-1), evs...)
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.lastLSN != 0 && tx.CommitLSN <= m.lastLSN {
		return nil // raced with another publisher of the same transaction
	}
	m.lastLSN = tx.CommitLSN
	live := evs
	for i, ev := range evs {
		m.retainLocked(ev)
		if !m.delivered.Less(ev.Position) {
			// Re-streamed after a restart and already delivered by the
			// earlier run: retained for resume, not delivered again.
			live = evs[i+1:]
		}
	}
	// The stream has reached the transaction's last position, even if
	// Prepare dropped that event.
	if n := len(tx.Events); n > 0 && m.last.Less(tx.Events[n-1].Position) {
		m.last = tx.Events[n-1].Position
	}
	if len(live) == 1 {
		m.fanoutLocked(live[0])
	} else if len(live) > 1 {
		m.fanoutBatchLocked(live)
	}
	if len(tx.Events) > 0 {
		m.notifyLocked()
	}
	return nil
}

// notifyLocked wakes the waiters for a move of the stream, if any.
func (m *Memory) notifyLocked() {
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

func (m *Memory) retainLocked(ev *Event) {
	n := len(m.history)
	if n == 0 {
		m.base, m.baseKnown = ev.Position, true
		return
	}
	if m.histLen == n {
		old := m.history[m.histStart]
		m.base, m.baseKnown = old.Position, true
		m.history[m.histStart] = ev
		m.histStart = (m.histStart + 1) % n
		return
	}
	m.history[(m.histStart+m.histLen)%n] = ev
	m.histLen++
}

func (m *Memory) historyAt(i int) *Event { return m.history[(m.histStart+i)%len(m.history)] }

// eventKeys returns the index keys an event matches, in a fixed array.
func eventKeys(ev *Event) ([4]topicKey, int) {
	var keys [4]topicKey
	keys[0] = topicKey{}
	keys[1] = topicKey{coll: ev.Collection}
	n := 2
	if ev.RecordID != "" {
		keys[n] = topicKey{ev.Collection, ev.RecordID}
		n++
	}
	if ev.OldRecordID != "" && ev.OldRecordID != ev.RecordID {
		keys[n] = topicKey{ev.Collection, ev.OldRecordID}
		n++
	}
	return keys, n
}

// fanoutLocked hands ev to every member with a matching pattern, once each.
func (m *Memory) fanoutLocked(ev *Event) {
	m.seq++
	m.matchLocked(ev, m.seq, 0)
}

// matchLocked hands ev to every member with a matching pattern that does
// not have it yet (hitLocked): a few map lookups for the unfiltered
// patterns, and the filter index of each topic key.
func (m *Memory) matchLocked(ev *Event, seq, batch uint64) {
	keys, n := eventKeys(ev)
	er := eventRow{ev: ev}
	for i := 0; i < n; i++ {
		for mb := range m.index[keys[i]] {
			m.hitLocked(mb, ev, seq, batch)
		}
		if g := m.filtered[keys[i]]; g != nil {
			m.matchFilteredLocked(g, &er, seq, batch)
		}
	}
}

// hitLocked delivers ev to mb (batch 0) or adds it to mb's batch, unless
// mb already has event seq.
func (m *Memory) hitLocked(mb *member, ev *Event, seq, batch uint64) {
	if mb.lastSeq == seq {
		return
	}
	mb.lastSeq = seq
	if batch == 0 {
		mb.sub.Deliver(ev)
		return
	}
	if mb.batchSeq != batch {
		mb.batchSeq = batch
		mb.batch = nil
		m.touched = append(m.touched, mb)
	}
	mb.batch = append(mb.batch, ev)
}

// fanoutBatchLocked hands each member the events of one transaction that
// it matches as a single batch, so that a large transaction takes one slot
// of a subscriber's queue instead of one per row.
func (m *Memory) fanoutBatchLocked(evs []*Event) {
	m.batchSeq++
	batch := m.batchSeq
	m.touched = m.touched[:0]
	for _, ev := range evs {
		m.seq++
		m.matchLocked(ev, m.seq, batch)
	}
	touched := m.touched
	for i, mb := range touched {
		b := mb.batch
		mb.batch = nil
		touched[i] = nil
		if len(b) == 1 {
			mb.sub.Deliver(b[0])
		} else {
			mb.sub.DeliverBatch(b)
		}
	}
	m.touched = touched[:0]
}

func (mb *member) matches(ev *Event) bool {
	er := eventRow{ev: ev}
	for i := range mb.patterns {
		if mb.patterns[i].matches(ev, &er) {
			return true
		}
	}
	return false
}

// delivered reports whether one of mb's patterns has delivered ev (it
// matches ev and was in place before ev).
func (mb *member) delivered(ev *Event) bool {
	er := eventRow{ev: ev}
	for i := range mb.patterns {
		if p := &mb.patterns[i]; p.from.Less(ev.Position) && p.matches(ev, &er) {
			return true
		}
	}
	return false
}

// PublishLive implements Broker.
func (m *Memory) PublishLive(ctx context.Context, ev *Event) error {
	ev.Position = Position{}
	ok, err := m.prepare(ev)
	if err != nil || !ok {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.fanoutLocked(ev)
	return nil
}

// SetBase implements Broker.
func (m *Memory) SetBase(pos Position) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.baseKnown && !m.base.Less(pos) {
		return
	}
	m.base, m.baseKnown = pos, true
	if m.last.Less(pos) {
		m.last = pos
	}
	// Retained events at or before the new base are out of the window (a
	// recreated slot leaves a gap after them).
	for m.histLen > 0 && !pos.Less(m.historyAt(0).Position) {
		m.history[m.histStart] = nil
		m.histStart = (m.histStart + 1) % len(m.history)
		m.histLen--
	}
	m.notifyLocked()
}

// MarkDelivered implements Broker.
func (m *Memory) MarkDelivered(pos Position) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.delivered.Less(pos) {
		m.delivered = pos
	}
}

// Retained implements Broker.
func (m *Memory) Retained() (base, first Position) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.baseKnown {
		base = m.base
	}
	if m.histLen > 0 {
		first = m.historyAt(0).Position
	}
	return base, first
}

// lastLocked is the position subscribers are told: the last event
// published, or delivered by an earlier run, whichever is later.
func (m *Memory) lastLocked() Position {
	if m.last.Less(m.delivered) {
		return m.delivered
	}
	return m.last
}

// Subscribe implements Broker.
func (m *Memory) Subscribe(ctx context.Context, sub Subscriber, patterns []Pattern, since *Position) (Position, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if since != nil {
		// Wait for the stream to reach since, and what an earlier run
		// delivered (still catching up after a restart): events up to
		// there are not delivered live again, so they must be replayed.
		for !m.closed && (m.last.Less(*since) || m.last.Less(m.delivered)) {
			if m.changed == nil {
				m.changed = make(chan struct{})
			}
			ch := m.changed
			m.mu.Unlock()
			select {
			case <-ch:
				m.mu.Lock()
			case <-ctx.Done():
				m.mu.Lock()
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return Position{}, fmt.Errorf("%w (position %s is ahead of the stream, which reached %s)", ErrHistoryUnavailable, since, m.last)
				}
				return Position{}, ctx.Err()
			}
		}
	}
	if m.closed {
		return Position{}, ErrClosed
	}
	mb := m.members[sub]
	var replay []*Event
	if since != nil {
		if !m.resumableLocked(*since) {
			return Position{}, ErrHistoryUnavailable
		}
		replay = m.replayLocked(mb, patterns, *since)
	}
	if mb == nil {
		mb = &member{sub: sub, patterns: make(patternSet, 0, len(patterns))}
		m.members[sub] = mb
	}
	if len(replay) > 0 {
		sub.DeliverBatch(replay)
	}
	from := m.lastLocked()
	if since != nil {
		from = *since
	}
	for _, p := range patterns {
		k := keyOf(p)
		if mb.patterns.has(k) {
			continue
		}
		mb.patterns = append(mb.patterns, patternFrom{k, p.Filters, from})
		if p.Filters != nil {
			g := m.filtered[k.topicKey]
			if g == nil {
				g = newFilterGroup()
				m.filtered[k.topicKey] = g
			}
			g.add(filtered{mb, p.Filters})
			continue
		}
		set := m.index[k.topicKey]
		if set == nil {
			set = make(map[*member]struct{})
			m.index[k.topicKey] = set
		}
		set[mb] = struct{}{}
	}
	return m.lastLocked(), nil
}

// resumableLocked reports whether every event after since is retained.
func (m *Memory) resumableLocked(since Position) bool {
	if m.baseKnown && !since.Less(m.base) {
		return true
	}
	return m.histLen > 0 && !since.Less(m.historyAt(0).Position)
}

// replayLocked collects retained events after since that match the new
// patterns and that none of the member's existing patterns delivered.
func (m *Memory) replayLocked(mb *member, patterns []Pattern, since Position) []*Event {
	fresh := &member{patterns: make(patternSet, 0, len(patterns))}
	for _, p := range patterns {
		if k := keyOf(p); !fresh.patterns.has(k) {
			fresh.patterns = append(fresh.patterns, patternFrom{k, p.Filters, since})
		}
	}
	// Binary search for the first retained event after since.
	lo, hi := 0, m.histLen
	for lo < hi {
		mid := (lo + hi) / 2
		if m.historyAt(mid).Position.Compare(since) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	var out []*Event
	for i := lo; i < m.histLen; i++ {
		ev := m.historyAt(i)
		if fresh.matches(ev) && (mb == nil || !mb.delivered(ev)) {
			out = append(out, ev)
		}
	}
	return out
}

// Unsubscribe implements Broker.
func (m *Memory) Unsubscribe(sub Subscriber, patterns []Pattern) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb := m.members[sub]
	if mb == nil {
		return
	}
	for _, p := range patterns {
		m.dropLocked(mb, keyOf(p))
	}
	if len(mb.patterns) == 0 {
		delete(m.members, sub)
	}
}

func (m *Memory) dropLocked(mb *member, k subKey) {
	i := mb.patterns.find(k)
	if i < 0 {
		return
	}
	f := mb.patterns[i].f
	mb.patterns = mb.patterns.without(k)
	if f != nil {
		if g := m.filtered[k.topicKey]; g != nil {
			g.remove(filtered{mb, f})
			if g.empty() {
				delete(m.filtered, k.topicKey)
			}
		}
		return
	}
	if set := m.index[k.topicKey]; set != nil {
		delete(set, mb)
		if len(set) == 0 {
			delete(m.index, k.topicKey)
		}
	}
}

// Remove implements Broker.
func (m *Memory) Remove(sub Subscriber) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb := m.members[sub]
	if mb == nil {
		return
	}
	for len(mb.patterns) > 0 {
		m.dropLocked(mb, mb.patterns[0].key)
	}
	delete(m.members, sub)
}

// LastPosition implements Broker.
func (m *Memory) LastPosition() Position {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastLocked()
}

// Close implements Broker.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.notifyLocked()
	}
	return nil
}
