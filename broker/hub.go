package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
)

// HubConfig configures a Hub.
type HubConfig struct {
	// HistorySize is how many WAL events are retained for Subscribe with
	// since. 0 keeps none (a subscriber can then resume only from the last
	// applied position).
	HistorySize int
	// Prepare, when set, runs once per event before it is retained and
	// fanned out (rules: omit columns, per-event evaluation). Returning
	// false drops the event: never retained, never delivered.
	Prepare func(*Event) bool
	// Logger; default zerolog.Nop().
	Logger zerolog.Logger
}

// Hub is the local fan-out every Broker implementation shares: the topic
// index, the members, the ring of retained events, replay with since, and
// the batching of a transaction per subscriber. It implements
// Subscriptions; its feed is Apply (WAL transactions, from one goroutine)
// and ApplyLive (live events, from any goroutine).
//
// All state is guarded by one mutex; Deliver, DeliverBatch and Resync are
// called with it held, which is why they must not block. Prepare and
// encoding run before the lock is taken.
type Hub struct {
	cfg HubConfig
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
	base      Position // every event up to base was applied, and all after it are retained
	baseKnown bool
	last      Position // last WAL event applied (or base)
	delivered Position // events up to here were delivered by an earlier run (Memory's checkpoint)
	// changed is closed when the stream moves; nil while nobody waits
	// for that (made by the first waiter).
	changed chan struct{}
	closed  bool
}

var _ Subscriptions = (*Hub)(nil)

// NewHub returns an empty Hub.
func NewHub(cfg HubConfig) *Hub {
	if cfg.HistorySize < 0 {
		cfg.HistorySize = 0
	}
	return &Hub{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "broker").Logger(),
		index:    make(map[topicKey]map[*member]struct{}),
		filtered: make(map[topicKey]*filterGroup),
		members:  make(map[Subscriber]*member),
		history:  make([]*Event, cfg.HistorySize),
	}
}

// prepare runs the Prepare hook and encodes the event; false drops it.
func (h *Hub) prepare(ev *Event) (bool, error) {
	if h.cfg.Prepare != nil && !h.cfg.Prepare(ev) {
		return false, nil
	}
	b, err := ev.Encode()
	if err != nil {
		return false, fmt.Errorf("encode %s event of %s: %w", ev.Action, ev.Collection, err)
	}
	ev.JSON = b
	return true, nil
}

// Apply fans out one transaction's events, in order, and retains them.
// Positions increase within evs. A transaction whose events are all at or
// before the hub's last position is ignored (applied already), whatever
// prev. Otherwise prev is the position the first event directly follows:
// when the hub has a position and prev is not it, the stream had a
// discontinuity and Apply calls Reset(prev) first. Events at or before the
// last position are left out. The position advances to the transaction's
// last event even when Prepare drops it. Called by one goroutine only (the
// feed).
func (h *Hub) Apply(prev Position, evs []*Event) {
	h.apply(&prev, evs)
}

// apply is Apply; with prev nil (Memory, whose feed is its own position)
// there is no continuity check.
func (h *Hub) apply(prev *Position, evs []*Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	if !h.last.Less(evs[len(evs)-1].Position) {
		h.mu.Unlock()
		h.log.Debug().Str("position", evs[len(evs)-1].Position.String()).Msg("ignoring transaction applied already")
		return
	}
	// A predecessor after the last position means events in between are
	// unknown here: a discontinuity. One at or before it is continuous:
	// this hub has every event up to its last position (a feed names a
	// base after its store lost data that this hub had applied already).
	if prev != nil && h.hasPositionLocked() && h.last.Less(*prev) {
		h.log.Warn().Str("prev", prev.String()).Str("last", h.last.String()).Msg("stream discontinuity: resetting the history and resyncing every subscriber")
		h.resetLocked(*prev)
	}
	last := h.last
	h.mu.Unlock()
	kept := h.prepareTx(evs, last)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || !h.last.Less(evs[len(evs)-1].Position) {
		return // closed, or raced with another feed of the same transaction
	}
	live := kept
	for i, ev := range kept {
		h.retainLocked(ev)
		if !h.delivered.Less(ev.Position) {
			// Re-streamed after a restart and already delivered by the
			// earlier run: retained for resume, not delivered again.
			live = kept[i+1:]
		}
	}
	// The stream has reached the transaction's last position, even if
	// Prepare dropped that event.
	h.last = evs[len(evs)-1].Position
	if len(live) == 1 {
		h.fanoutLocked(live[0])
	} else if len(live) > 1 {
		h.fanoutBatchLocked(live)
	}
	h.notifyLocked()
}

// prepareTx prepares and encodes the events after last; it returns the
// ones kept: evs itself until an event is left out (no copy in the common
// case).
func (h *Hub) prepareTx(evs []*Event, last Position) []*Event {
	out := evs[:0:0]
	for i, ev := range evs {
		keep := last.Less(ev.Position) // else applied before (or before the base)
		if keep {
			ok, err := h.prepare(ev)
			if err != nil {
				// An event that cannot be encoded is a bug in a value
				// conversion; refusing the transaction would stall the WAL.
				h.log.Error().Err(err).Str("position", ev.Position.String()).Msg("dropping event that cannot be encoded")
			}
			keep = ok && err == nil
		}
		switch {
		case keep && len(out) == i:
			out = evs[:i+1]
		case keep:
			out = append(out, ev)
		case len(out) == i:
			// The first event left out: copy the ones kept so far.
			out = append(make([]*Event, 0, len(evs)-1), out...)
		}
	}
	return out
}

// ApplyLive fans out a live-only event (any goroutine): never positioned,
// never retained. An event that cannot be encoded is logged and dropped.
func (h *Hub) ApplyLive(ev *Event) {
	if err := h.applyLive(ev); err != nil && !errors.Is(err, ErrClosed) {
		h.log.Error().Err(err).Msg("dropping live event that cannot be encoded")
	}
}

func (h *Hub) applyLive(ev *Event) error {
	ev.Position = Position{}
	ok, err := h.prepare(ev)
	if err != nil || !ok {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	h.fanoutLocked(ev)
	return nil
}

// Advance moves the position to pos without an event (nothing when pos is
// not after it): the feed vouches that no event before pos is missing here
// (cluster: every entry below the flushed watermark is applied). A hub
// that knew no position takes pos as its base. Subscribers are told pos;
// WaitFor(pos) returns.
func (h *Hub) Advance(pos Position) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || !h.last.Less(pos) {
		return
	}
	if !h.hasPositionLocked() {
		h.base, h.baseKnown = pos, true
	}
	h.last = pos
	h.notifyLocked()
}

// Reset declares a discontinuity of the stream at pos: the retained events
// are dropped, the base and the position become pos (a since before pos is
// history_unavailable, one at or after it replays exactly what follows),
// and every member is told Resync, once, and removed. With no members it
// only sets the base (a fresh node before it loads its history).
func (h *Hub) Reset(pos Position) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resetLocked(pos)
}

func (h *Hub) resetLocked(pos Position) {
	for i := 0; i < h.histLen; i++ {
		h.history[(h.histStart+i)%len(h.history)] = nil
	}
	h.histStart, h.histLen = 0, 0
	h.base, h.baseKnown = pos, true
	h.last, h.delivered = pos, Position{}
	members := h.members
	h.index = make(map[topicKey]map[*member]struct{})
	h.filtered = make(map[topicKey]*filterGroup)
	h.members = make(map[Subscriber]*member)
	for sub := range members {
		sub.Resync()
	}
	h.notifyLocked()
}

// hasPositionLocked reports whether the hub knows a position (a base, or
// an applied event).
func (h *Hub) hasPositionLocked() bool { return h.baseKnown || !h.last.IsZero() }

// lastLocked is the position subscribers are told: the last event
// applied, or delivered by an earlier run, whichever is later.
func (h *Hub) lastLocked() Position {
	if h.last.Less(h.delivered) {
		return h.delivered
	}
	return h.last
}

// Position implements Subscriptions.
func (h *Hub) Position() Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastLocked()
}

// WaitFor implements Subscriptions.
func (h *Hub) WaitFor(ctx context.Context, pos Position) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		if h.closed {
			return ErrClosed
		}
		last := h.lastLocked()
		if !last.IsZero() && !last.Less(pos) {
			return nil
		}
		if err := h.waitLocked(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w (position %s is ahead of the stream, which reached %s)", ErrHistoryUnavailable, pos, h.lastLocked())
			}
			return err
		}
	}
}

// waitLocked waits, with the lock released, until the stream moves or ctx
// is done (then it returns ctx's error).
func (h *Hub) waitLocked(ctx context.Context) error {
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	ch := h.changed
	h.mu.Unlock()
	select {
	case <-ch:
		h.mu.Lock()
		return nil
	case <-ctx.Done():
		h.mu.Lock()
		return ctx.Err()
	}
}

// notifyLocked wakes the waiters for a move of the stream, if any.
func (h *Hub) notifyLocked() {
	if h.changed != nil {
		close(h.changed)
		h.changed = nil
	}
}

// Close stops the hub: Subscribe and WaitFor fail with ErrClosed, and
// nothing more is applied.
func (h *Hub) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		h.notifyLocked()
	}
	return nil
}
