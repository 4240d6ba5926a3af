package redisbroker

import (
	"sync"

	"github.com/pgrealtime/pgrealtime/broker"
)

// The leader's own transactions (docs/cluster.md section 4). Every node
// applies the stream; the leader would read back, decode and apply what it
// has just appended. Instead, once Redis confirmed a batch, the appender
// hands its transactions' events to this node's follower loop, which
// applies them exactly as if it had read them: only a transaction that
// directly follows what the node applied (its predecessor at or before the
// node's position, the rule every entry is held to), in stream order.
// Anything else (entries another leader appended, a batch Redis refused in
// part, a queue that overflowed) makes the follower read the stream, as
// every other node does, until it has caught up.

// localTx is one transaction the appender wrote, as Redis confirmed it.
// floor is its session's floor (localFeed.floor).
type localTx struct {
	prev, last, floor broker.Position
	events            []*broker.Event
	size              int
}

// localFeed passes confirmed transactions from the appender to the
// follower loop of the same node.
type localFeed struct {
	mu    sync.Mutex
	txs   []localTx
	bytes int
	// active: an append session runs on this node. floor is the later of
	// its first entry's p and the stream's last id when it began: the
	// follower reads the stream until it has applied the floor. (The p may
	// be a base <from>-0 below entries the session skipped as already in
	// the stream: a node that reads in order applies those first, and so
	// must this one before it takes the session's own transactions.)
	active bool
	floor  broker.Position
	// gap: some of this session's entries are not in txs (refused by
	// Redis, or dropped from a full queue): read the stream until it has
	// nothing more.
	gap bool
	// gen counts the times gap was set, so that a follower's read of the
	// stream clears only a gap set before the read began.
	gen  uint64
	wake chan struct{}
}

func newLocalFeed() *localFeed { return &localFeed{wake: make(chan struct{}, 1)} }

func (l *localFeed) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// begin records that a session whose transactions follow floor runs here.
func (l *localFeed) begin(floor broker.Position) {
	l.mu.Lock()
	l.active, l.floor, l.gap = true, floor, false
	l.mu.Unlock()
	l.signal()
}

// end records that the session ended (its confirmed transactions stay).
func (l *localFeed) end() {
	l.mu.Lock()
	l.active = false
	l.mu.Unlock()
	l.signal()
}

// push queues confirmed transactions; beyond MaxQueueBytes it drops the
// queue and has the follower read the stream instead.
func (l *localFeed) push(txs []localTx) {
	l.mu.Lock()
	for _, t := range txs {
		l.txs = append(l.txs, t)
		l.bytes += t.size
	}
	if l.bytes > MaxQueueBytes {
		clear(l.txs)
		l.txs, l.bytes, l.gap = l.txs[:0], 0, true
		l.gen++
	}
	l.mu.Unlock()
	l.signal()
}

// missed records that some entries of the session are not in the queue.
func (l *localFeed) missed() {
	l.mu.Lock()
	l.gap = true
	l.gen++
	l.mu.Unlock()
	l.signal()
}

// generation is the count of gaps so far (before a read of the stream).
func (l *localFeed) generation() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// caughtUp clears gap: the follower read the stream to its end in a read
// that began at generation gen (a gap set since is not covered).
func (l *localFeed) caughtUp(gen uint64) {
	l.mu.Lock()
	if l.gen == gen {
		l.gap = false
	}
	l.mu.Unlock()
}

// peek returns the oldest queued transaction.
func (l *localFeed) peek() (localTx, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.txs) == 0 {
		return localTx{}, false
	}
	return l.txs[0], true
}

// pop drops the oldest queued transaction.
func (l *localFeed) pop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.txs) == 0 {
		return
	}
	l.bytes -= l.txs[0].size
	l.txs[0] = localTx{}
	l.txs = l.txs[1:]
	if len(l.txs) == 0 {
		l.txs = nil
	}
}

// serving reports whether the follower, having applied up to applied,
// may wait for the queue instead of reading the stream: a session runs
// here, nothing of it is missing from the queue, the queue is empty, and
// every entry before the session is applied (the floor).
func (l *localFeed) serving(applied broker.Position) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active && !l.gap && len(l.txs) == 0 && !applied.Less(l.floor)
}

// takeLocal applies the queued transactions that directly follow what
// the node applied, once it has applied their session's floor, and drops
// those it applied already (read from the stream); it stops at one it may
// not take yet (the stream has entries before it). It reports whether it
// applied any.
func (f *follower) takeLocal() bool {
	l := f.b.local
	applied := false
	for {
		lt, ok := l.peek()
		switch {
		case !ok:
			return applied
		case f.hasApplied && !f.applied.Less(lt.last):
			l.pop()
		case f.atBoundary() && !f.applied.Less(lt.prev) && !f.applied.Less(lt.floor):
			l.pop()
			f.b.hub.Apply(lt.prev, lt.events)
			f.applied = lt.last
			f.cursor = streamID(lt.last)
			f.resume = f.cursor
			applied = true
		default:
			return applied
		}
	}
}
