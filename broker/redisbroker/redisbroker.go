package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
)

// Config configures a Broker.
type Config struct {
	// Client is the process's one Redis client (cmd creates it from the
	// --redis-url with DisableCache). The Broker never closes it.
	Client rueidis.Client
	// Slot is the replication slot's name: every key is
	// pgrealtime:{<Slot>}:… (one Redis Cluster hash slot).
	Slot string
	// HistorySize is the number of events retained, in Redis (XTRIM MAXLEN
	// ~) and in this node's ring.
	HistorySize int
	// Prepare is the node's rules hook (broker.HubConfig.Prepare).
	Prepare func(*broker.Event) bool
	// Origin, when set, is "<system_identifier>/<timeline>/<database>" of
	// the Postgres the leader reads: Begin stores it with SET NX and
	// refuses to append to a stream written from another origin.
	Origin string
	// Logger; the zero value logs nothing.
	Logger zerolog.Logger
}

// MaxQueueBytes bounds the encoded payload queued or in flight in the
// appender: Append blocks beyond it.
const MaxQueueBytes = 64 << 20

// TrimGrace: the stream keeps HistorySize entries plus every entry
// appended within TrimGrace, so that trimming overtakes (and resets) only
// a node that is that far behind.
const TrimGrace = 10 * time.Second

// Backoff of the follower and live loops after a Redis error.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// keys are the Redis keys of one slot (docs/cluster.md section 6).
type keys struct {
	stream, flushed, origin, format, live string
}

func newKeys(slot string) keys {
	p := "pgrealtime:{" + slot + "}:"
	return keys{stream: p + "stream", flushed: p + "flushed", origin: p + "origin", format: p + "format", live: p + "live"}
}

// applier is the local fan-out the follower and live loops feed
// (broker.Hub's methods).
type applier interface {
	Apply(prev broker.Position, evs []*broker.Event)
	ApplyLive(ev *broker.Event)
	Reset(pos broker.Position)
	Advance(pos broker.Position)
	Position() broker.Position
}

// Broker is one node's side of the cluster: the follower and live loops
// (Run) feed the local fan-out, a broker.Hub that serves the node's
// subscriptions; Begin, Append and Durable are the leader's appender
// (whoever calls them: only the elected leader runs the WAL reader, and
// the slot fences everyone else).
type Broker struct {
	cfg  Config
	c    rueidis.Client
	keys keys
	hub  applier
	subs *broker.Hub // the hub as Subscriptions (nil in tests that record)
	log  zerolog.Logger

	mu           sync.Mutex
	closed       bool
	followReason string // why the follower is not ready ("" = ready)
	liveReason   string // why live events are not received ("" = subscribed)
	origin       string // what SetOrigin set
	originSet    bool

	app        appender
	local      *localFeed    // the appender's confirmed transactions, for the follower loop
	queueLimit int           // MaxQueueBytes; tests lower it
	idleEvery  time.Duration // idleWatermarkEvery; tests shorten it
	trimGrace  time.Duration // TrimGrace; tests shorten it
	readBlock  time.Duration // the follower's XREAD BLOCK; tests shorten it

	// beforeRead, when set (tests), is called before every XREAD.
	beforeRead func(ctx context.Context)
	// prefetchHits counts batches served by an XREAD sent ahead (tests).
	prefetchHits atomic.Int64
}

// SetOrigin replaces Config.Origin for the next Begin: cmd reads the
// database's identity when a node becomes leader (the database may not be
// reachable when the node starts). "" turns the origin check off.
func (b *Broker) SetOrigin(origin string) {
	b.mu.Lock()
	b.origin, b.originSet = origin, true
	b.mu.Unlock()
}

func (b *Broker) currentOrigin() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.originSet {
		return b.origin
	}
	return b.cfg.Origin
}

func validate(cfg Config) error {
	switch {
	case cfg.Client == nil:
		return errors.New("redisbroker: Config.Client is nil")
	case cfg.Slot == "":
		return errors.New("redisbroker: Config.Slot is empty")
	case cfg.HistorySize < 1:
		return fmt.Errorf("redisbroker: Config.HistorySize is %d: it must be at least 1", cfg.HistorySize)
	}
	return nil
}

var _ broker.Broker = (*Broker)(nil)

// New returns a node's Broker; cmd runs its Run until the process stops.
func New(cfg Config) (*Broker, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	hub := broker.NewHub(broker.HubConfig{HistorySize: cfg.HistorySize, Prepare: cfg.Prepare, Logger: cfg.Logger})
	b, err := newBroker(cfg, hub)
	if err != nil {
		return nil, err
	}
	b.subs = hub
	return b, nil
}

// newBroker builds a Broker that feeds hub.
func newBroker(cfg Config, hub applier) (*Broker, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg: cfg, c: cfg.Client, keys: newKeys(cfg.Slot), hub: hub,
		log:          cfg.Logger.With().Str("component", "redisbroker").Logger(),
		followReason: "not started: the follower loop is not running",
		liveReason:   "not started: the live event loop is not running",
	}
	b.app.b = b
	b.local = newLocalFeed()
	b.queueLimit, b.idleEvery, b.trimGrace, b.readBlock = MaxQueueBytes, idleWatermarkEvery, TrimGrace, readBlock
	return b, nil
}

// Run runs the follower loop and the live event loop until ctx ends.
func (b *Broker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.follow(ctx) }()
	go func() { defer wg.Done(); b.liveLoop(ctx) }()
	wg.Wait()
	b.setFollowReason("stopped")
	b.setLiveReason("stopped")
	return nil
}

// Ready is nil when Redis answers, the follower loop has loaded the
// history and is reading, and the live event subscription is in place;
// else an error saying why not (the /readyz reason).
func (b *Broker) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.followReason != "":
		return errors.New(b.followReason)
	case b.liveReason != "":
		return errors.New(b.liveReason)
	}
	return nil
}

// Position is the position of the last event applied on this node.
func (b *Broker) Position() broker.Position { return b.hub.Position() }

func (b *Broker) setFollowReason(s string) {
	b.mu.Lock()
	b.followReason = s
	b.mu.Unlock()
}

func (b *Broker) setLiveReason(s string) {
	b.mu.Lock()
	b.liveReason = s
	b.mu.Unlock()
}

// sleep waits d or until ctx ends and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d *= 2; d > maxBackoff {
		d = maxBackoff
	}
	return d
}

// Subscribe implements broker.Subscriptions.
func (b *Broker) Subscribe(ctx context.Context, sub broker.Subscriber, patterns []broker.Pattern, since *broker.Position) (broker.Position, error) {
	return b.subs.Subscribe(ctx, sub, patterns, since)
}

// Unsubscribe implements broker.Subscriptions.
func (b *Broker) Unsubscribe(sub broker.Subscriber, patterns []broker.Pattern) {
	b.subs.Unsubscribe(sub, patterns)
}

// Remove implements broker.Subscriptions.
func (b *Broker) Remove(sub broker.Subscriber) { b.subs.Remove(sub) }

// WaitFor implements broker.Subscriptions.
func (b *Broker) WaitFor(ctx context.Context, pos broker.Position) error {
	return b.subs.WaitFor(ctx, pos)
}

// isClosed reports whether Close was called.
func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close ends the append session, if any, dropping what it has not sent
// (within about a second when Redis does not answer), and closes the hub;
// later Begin, Append, Durable, PublishLive and Subscribe calls fail with
// broker.ErrClosed. The loops end with Run's ctx.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.app.end()
	if b.subs != nil {
		return b.subs.Close()
	}
	return nil
}
