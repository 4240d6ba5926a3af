// Package broker routes events from the WAL reader (and other sources) to
// subscribers by topic pattern.
//
// The contract is split by caller (docs/cluster.md section 2): the WAL
// reader publishes through Publisher and LivePublisher, the single-node
// resume window is a Checkpoint, the WebSocket server uses Subscriptions,
// and Broker is all of them for cmd and for brokertest. Hub is the local
// fan-out every implementation shares; Memory is Hub plus a synchronous
// Publisher plus the Checkpoint.
//
// Guarantees of every Broker implementation:
//   - Events of WAL transactions are delivered in commit order, all events of
//     one transaction before any of the next.
//   - A subscriber receives each event at most once, however many of its
//     patterns match it; an update that changed the key matches patterns of
//     the old and of the new record id.
//   - Matching costs a handful of map lookups per event whatever the number
//     of subscribers; each event is encoded once and the bytes are shared.
//   - Column filters (Pattern.Filters) are evaluated on the event's typed
//     values without allocating. Subscriptions are indexed by an eq or a
//     short in filter (a map from value to subscribers), else by a range
//     filter (sorted by bound), so subscribers whose indexed filter an
//     event fails cost nothing; only patterns whose filters are all neq
//     or is are scanned.
//   - Publishing never blocks on a subscriber: Subscriber.Deliver must not
//     block (slow subscribers drop themselves).
//   - Subscribe with a since position replays retained events after it, then
//     goes live, with no gap and no duplicate between the two; or fails with
//     ErrHistoryUnavailable when a gap cannot be ruled out.
//   - When a node can no longer guarantee a subscriber every event (a
//     discontinuity of the stream, Hub.Reset), the subscriber is told so
//     (Subscriber.Resync) and removed, never left with a silent gap.
//
// The package imports neither the WAL reader nor the WebSocket server.
package broker

import (
	"context"
	"errors"
)

// Errors returned by Subscribe.
var (
	// ErrHistoryUnavailable: the since position is older than the retained
	// history (or a gap after it cannot be ruled out).
	ErrHistoryUnavailable = errors.New("history unavailable: the position is older than the retained history; re-read your data and subscribe without since")
	// ErrClosed: the broker was closed.
	ErrClosed = errors.New("broker closed")
)

// Subscriber is the receiving end of a connection. The broker identifies a
// subscriber by its interface value (use a pointer type).
type Subscriber interface {
	// Deliver hands over one matching event. It is called from the
	// publishing goroutine and must not block: a subscriber that cannot keep
	// up must drop itself (close its connection), never stall the caller.
	Deliver(ev *Event)
	// DeliverBatch hands over several matching events at once, in order, to
	// be treated as one unit (one slot of a send queue): the events of one
	// multi-event transaction that the subscriber matches, or the retained
	// events of a Subscribe with since (before any live event of the new
	// patterns). The slice belongs to the subscriber. It must not block.
	DeliverBatch(evs []*Event)
	// Resync tells the subscriber that this node can no longer guarantee
	// it every event (the stream had a discontinuity, Hub.Reset); the
	// subscriber has been removed. It must not block; wsapi closes the
	// connection with 1001 so that the client reconnects and resumes with
	// since, which then replays exactly or answers history_unavailable.
	// Never called by Memory.
	Resync()
}

// Publisher is the WAL reader's side: committed transactions in commit
// order, from one goroutine.
type Publisher interface {
	// Begin is called at the start of every replication session, before the
	// first Append: from now on every event after from is appended (again).
	// from is Position{LSN: the slot's confirmed_flush_lsn}.
	Begin(ctx context.Context, from Position) error
	// Append hands over one committed transaction. It may return before the
	// transaction is durable (queued for a later batch); it blocks only
	// when too much is in flight (backpressure), and then at most until
	// ctx is done. Transactions whose events are all at or before what was
	// appended already are ignored (at-least-once WAL in, exactly-once out).
	Append(ctx context.Context, tx *Tx) error
	// Durable reports how far the reader may acknowledge, given that
	// everything before safe was appended or had no events: safe itself
	// when nothing appended is unconfirmed, else the CommitLSN of the oldest
	// unconfirmed transaction; and never past what the implementation has
	// made durable. An error means an append failed: the reader ends the
	// session and streams again from its last acknowledgement.
	Durable(safe uint64) (uint64, error)
}

// LivePublisher takes live-only events (NOTIFY, HTTP broadcast,
// non-transactional WAL messages): never positioned, never retained.
type LivePublisher interface {
	PublishLive(ctx context.Context, ev *Event) error
}

// Checkpoint is the single-node resume window: it lets one process rebuild
// its in-memory history after a restart (implemented by Memory only; nil in
// cluster mode, where the reader writes no checkpoint and holds nothing
// back).
type Checkpoint interface {
	// SetBase declares that every event up to and including pos was
	// published by an earlier run and that every event after it will be
	// published (again) from now on (the reader's checkpoint after a
	// restart). Events at or before pos that are published again are
	// ignored. A Subscribe with since >= pos can then resume.
	SetBase(pos Position)
	// MarkDelivered declares that events up to and including pos were
	// delivered to subscribers by an earlier run. When the reader streams
	// them again after a restart (to rebuild the history), they are
	// retained for resume but not delivered live a second time, and
	// Subscribe reports at least pos.
	MarkDelivered(pos Position)
	// Retained reports the resume window: every event after base is
	// retained (zero when no base is known), and first is the position of
	// the oldest retained event (zero when none). The reader keeps the
	// slot from moving past first's transaction so that a restart can
	// rebuild the window.
	Retained() (base, first Position)
}

// Subscriptions is the WebSocket server's side.
type Subscriptions interface {
	// Subscribe adds patterns for sub, atomically: either all are added or
	// none. It returns the position of the last event applied when the
	// subscription took effect (the base before the first event, zero
	// while no base is known). With since, retained events after *since
	// that match the new patterns and that no existing pattern of sub has
	// delivered are passed to sub.DeliverBatch first. When *since is ahead
	// of everything applied, Subscribe waits (up to ctx) for the stream to
	// reach it, and fails with ErrHistoryUnavailable when ctx's deadline
	// passes first.
	Subscribe(ctx context.Context, sub Subscriber, patterns []Pattern, since *Position) (Position, error)
	// Unsubscribe removes patterns of sub; unknown ones are ignored.
	Unsubscribe(sub Subscriber, patterns []Pattern)
	// Remove drops every subscription of sub.
	Remove(sub Subscriber)
	// Position is the position of the last event applied on this node
	// (or the base before the first one; zero while none is known).
	Position() Position
	// WaitFor returns nil once this node's Position is known (not zero)
	// and not before pos; a zero pos waits only for a known position.
	// When ctx's deadline passes first it returns an error wrapping
	// ErrHistoryUnavailable, when ctx is cancelled ctx's error, and
	// ErrClosed when the broker is closed.
	WaitFor(ctx context.Context, pos Position) error
}

// Broker is everything, for cmd and for brokertest.
type Broker interface {
	Publisher
	LivePublisher
	Subscriptions
	// Close releases resources; later calls fail with ErrClosed.
	Close() error
}
