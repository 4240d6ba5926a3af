// Package broker routes events from the WAL reader (and other sources) to
// subscribers by topic pattern.
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
//
// The package imports neither the WAL reader nor the WebSocket server.
package broker

import (
	"context"
	"errors"
	"strings"
	"unicode"
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
}

// Broker is the event router. The WAL reader is its publisher; the
// WebSocket server subscribes connections to it.
type Broker interface {
	// Publish accepts one committed WAL transaction. When it returns nil the
	// transaction's events are retained in the history and handed to every
	// matching subscriber: the reader may acknowledge tx.EndLSN. Transactions
	// must be published in commit order; a transaction whose CommitLSN is not
	// after the last published one is a replayed duplicate and is ignored.
	Publish(ctx context.Context, tx *Tx) error
	// PublishLive delivers a live-only event (NOTIFY, HTTP): not positioned,
	// not retained.
	PublishLive(ctx context.Context, ev *Event) error
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
	// Subscribe adds patterns for sub, atomically: either all are added or
	// none. It returns the position of the last event published when the
	// subscription took effect (the base before the first event, zero
	// while no base is known). With since,
	// retained events after *since that match the new patterns and that no
	// existing pattern of sub has delivered are passed to sub.DeliverBatch first.
	// When *since is ahead of everything published, Subscribe waits (up to
	// ctx) for the stream to reach it.
	Subscribe(ctx context.Context, sub Subscriber, patterns []Pattern, since *Position) (Position, error)
	// Unsubscribe removes patterns of sub; unknown ones are ignored.
	Unsubscribe(sub Subscriber, patterns []Pattern)
	// Remove drops every subscription of sub.
	Remove(sub Subscriber)
	// LastPosition is the position of the last event published.
	LastPosition() Position
	// Close releases resources; later calls fail with ErrClosed.
	Close() error
}

// MaxPatternLen is the longest topic pattern accepted, in bytes.
const MaxPatternLen = 256

// Pattern is a parsed topic pattern (PROTOCOL section 2). Compare patterns
// by String: two parses of one filtered topic carry different Filters
// pointers.
type Pattern struct {
	// All is the "*" pattern: every event of every collection.
	All bool
	// Collection is set unless All.
	Collection string
	// ID is the record id; empty for a collection-level pattern.
	ID string
	// Filters, when not nil, are column filters every matching event must
	// pass (the part after "?").
	Filters *Filters
}

// ErrInvalidTopic is wrapped by ParsePattern errors.
var ErrInvalidTopic = errors.New("invalid topic")

// ParsePattern parses "*", "posts", "posts.*" or "posts.123" (everything
// after the first '.' is the id), optionally followed by "?" and column
// filters ("posts.*?user_id=eq.ann", also on a record pattern:
// "posts.123?status=eq.draft"). The first "?" always starts the filters,
// so a record id containing "?" cannot be named by a record pattern (use
// a filter on the key column instead). "*" takes no filters.
func ParsePattern(s string) (Pattern, error) {
	if len(s) > MaxPatternLen {
		return Pattern{}, topicErr("topic is longer than 256 bytes")
	}
	if strings.TrimSpace(s) != s {
		return Pattern{}, topicErr("topic starts or ends with whitespace")
	}
	s, filter, hasFilter := strings.Cut(s, "?")
	switch {
	case s == "" && hasFilter:
		return Pattern{}, topicErr(`topic has no collection before "?"`)
	case s == "":
		return Pattern{}, topicErr("topic is empty")
	case strings.IndexFunc(s, unicode.IsSpace) >= 0:
		return Pattern{}, topicErr("topic contains whitespace")
	case s == "*" && hasFilter:
		return Pattern{}, topicErr(`"*" takes no filters: put them on a collection, e.g. "posts.*?user_id=eq.ann"`)
	case s == "*":
		return Pattern{All: true}, nil
	}
	coll, id, hasDot := strings.Cut(s, ".")
	switch {
	case coll == "":
		return Pattern{}, topicErr(`topic has no collection before "."`)
	case strings.Contains(coll, "*"):
		return Pattern{}, topicErr(`"*" is only valid alone or as "<collection>.*"`)
	case hasDot && id == "":
		return Pattern{}, topicErr(`topic ends with "."; use "<collection>" or "<collection>.*" for the whole collection`)
	case id == "*":
		id = ""
	}
	p := Pattern{Collection: coll, ID: id}
	if hasFilter {
		fs, err := ParseFilters(filter)
		if err != nil {
			return Pattern{}, err
		}
		p.Filters = fs
	}
	return p, nil
}

func topicErr(msg string) error { return &topicError{msg} }

type topicError struct{ msg string }

func (e *topicError) Error() string { return e.msg }
func (e *topicError) Unwrap() error { return ErrInvalidTopic }

// String returns the canonical form: "*", "posts.*" or "posts.123",
// followed by "?" and the filters as written, if any ("posts" and
// "posts.*" are one pattern; filters are not reordered).
func (p Pattern) String() string {
	var s string
	switch {
	case p.All:
		s = "*"
	case p.ID == "":
		s = p.Collection + ".*"
	default:
		s = p.Collection + "." + p.ID
	}
	if p.Filters != nil {
		s += "?" + p.Filters.Text
	}
	return s
}
