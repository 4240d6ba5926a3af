package broker

import (
	"context"
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

// Memory is the in-process Broker: a Hub fed synchronously by its
// Publisher, plus the single-node Checkpoint. Append returning nil means
// the transaction's events are retained and handed to every matching
// subscriber, so Durable(safe) is safe itself. Memory never calls
// Subscriber.Resync: its stream has no discontinuity that SetBase does not
// already declare.
type Memory struct {
	hub *Hub
	// pub serializes Append, so that the hub has one feed even if
	// several goroutines publish.
	pub sync.Mutex
}

var (
	_ Broker     = (*Memory)(nil)
	_ Checkpoint = (*Memory)(nil)
)

// NewMemory returns an in-process broker.
func NewMemory(cfg Config) *Memory {
	return &Memory{hub: NewHub(HubConfig(cfg))}
}

// Begin implements Publisher. It does nothing: what a restart streams
// again is the Checkpoint's business (SetBase, MarkDelivered).
func (m *Memory) Begin(ctx context.Context, from Position) error { return nil }

// Append implements Publisher: it retains the transaction's events and
// hands them to every matching subscriber before it returns. Transactions
// must be appended in commit order; one whose events are all at or before
// the last appended position is a replayed duplicate and is ignored.
func (m *Memory) Append(ctx context.Context, tx *Tx) error {
	m.pub.Lock()
	defer m.pub.Unlock()
	m.hub.mu.Lock()
	closed := m.hub.closed
	m.hub.mu.Unlock()
	if closed {
		return ErrClosed
	}
	m.hub.apply(nil, tx.Events)
	return nil
}

// Durable implements Publisher: everything appended is delivered already.
func (m *Memory) Durable(safe uint64) (uint64, error) { return safe, nil }

// PublishLive implements LivePublisher.
func (m *Memory) PublishLive(ctx context.Context, ev *Event) error {
	return m.hub.applyLive(ev)
}

// SetBase implements Checkpoint.
func (m *Memory) SetBase(pos Position) { m.hub.setBase(pos) }

// MarkDelivered implements Checkpoint.
func (m *Memory) MarkDelivered(pos Position) { m.hub.markDelivered(pos) }

// Retained implements Checkpoint.
func (m *Memory) Retained() (base, first Position) { return m.hub.retained() }

// Subscribe implements Subscriptions.
func (m *Memory) Subscribe(ctx context.Context, sub Subscriber, patterns []Pattern, since *Position) (Position, error) {
	return m.hub.Subscribe(ctx, sub, patterns, since)
}

// Unsubscribe implements Subscriptions.
func (m *Memory) Unsubscribe(sub Subscriber, patterns []Pattern) { m.hub.Unsubscribe(sub, patterns) }

// Remove implements Subscriptions.
func (m *Memory) Remove(sub Subscriber) { m.hub.Remove(sub) }

// Position implements Subscriptions.
func (m *Memory) Position() Position { return m.hub.Position() }

// WaitFor implements Subscriptions.
func (m *Memory) WaitFor(ctx context.Context, pos Position) error { return m.hub.WaitFor(ctx, pos) }

// Close implements Broker.
func (m *Memory) Close() error { return m.hub.Close() }
