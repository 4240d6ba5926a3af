package wsapi

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// idleConn returns a conn on a real server-side socket whose writer is not
// running, so that its send queue only fills.
func idleConn(t *testing.T, sendQueue int) (*conn, *websocket.Conn) {
	t.Helper()
	b := broker.NewMemory(broker.Config{HistorySize: 16})
	t.Cleanup(func() { b.Close() })
	srv, err := New(Config{Broker: b, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), SendQueue: sendQueue})
	if err != nil {
		t.Fatal(err)
	}
	ws, cws := socketPair(t)
	c := srv.newConn(ws, "127.0.0.1:1", &auth.Identity{Subject: "root", Role: DefaultAdminRole})
	return c, cws
}

// The send queue holds SendQueue items (held ones included) for any
// length of time; past that, it takes a burst for BehindTimeout, then one
// more closes the connection with 4008, once, without blocking; it
// allocates nothing until something is queued, in FIFO order.
func TestSendQueueLimit(t *testing.T) {
	const limit = 100
	c, cws := idleConn(t, limit)
	c.s.cfg.BehindTimeout = 200 * time.Millisecond
	if cap(c.q) != 0 {
		t.Fatalf("a new connection preallocates a queue of %d items", cap(c.q))
	}
	slowBefore := counterValue(t, metrics.SlowConsumerCloses)
	evs := make([]*broker.Event, limit+1)
	for i := range evs {
		evs[i] = &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: "create", JSON: []byte("{}")}
	}
	// A subscribe in progress: the held deliveries count against the limit.
	c.hold()
	for _, ev := range evs[:limit/2] {
		c.Deliver(ev)
	}
	c.release([]byte(`{"type":"subscribed"}`))
	if got := c.queued(); got != limit/2+1 {
		t.Fatalf("queued %d, want %d", got, limit/2+1)
	}
	// Popping and pushing around the ring keeps the order.
	if it, _ := c.pop(); string(it.raw) != `{"type":"subscribed"}` {
		t.Fatalf("first item %+v, want the reply", it)
	}
	for i := 0; i < limit/2; i++ {
		if it, _ := c.pop(); it.ev != evs[i] {
			t.Fatalf("item %d out of order", i)
		}
		c.Deliver(evs[limit/2+i])
	}
	for _, ev := range evs[:limit/2] {
		c.Deliver(ev)
	}
	if got := c.queued(); got != limit {
		t.Fatalf("queued %d, want %d", got, limit)
	}
	select {
	case <-c.done:
		t.Fatalf("closed with %d items queued, the limit is %d", limit, limit)
	default:
	}
	// Past the limit: a burst, until the oldest items have waited
	// BehindTimeout.
	start := time.Now()
	c.Deliver(evs[limit])
	burst := 1
	for !c.isDone() {
		if time.Since(start) > 10*time.Second {
			t.Fatal("not closed after staying past the queue for 10 s")
		}
		c.Deliver(evs[limit])
		burst++
	}
	// Closed when the oldest items had waited BehindTimeout, or earlier
	// only because the burst reached the hard bound (a fast machine
	// queues 65 536 items in well under BehindTimeout).
	if d := time.Since(start); d < c.s.cfg.BehindTimeout && limit+burst < HardQueue(limit) {
		t.Fatalf("closed %v after the queue overflowed (%d queued), before BehindTimeout %v and below the hard bound %d", d, limit+burst, c.s.cfg.BehindTimeout, HardQueue(limit))
	}
	if limit+burst > HardQueue(limit)+1 {
		t.Fatalf("%d items queued before the close, past the hard bound %d", limit+burst, HardQueue(limit))
	}
	closedAt := c.queued()
	c.Deliver(evs[limit]) // after the close: ignored
	if got := c.queued(); got != closedAt {
		t.Fatalf("queued %d after the close, %d before", got, closedAt)
	}
	if d := counterValue(t, metrics.SlowConsumerCloses) - slowBefore; d != 1 {
		t.Fatalf("%v slow-consumer closes, want 1", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := cws.Read(ctx)
	if code := websocket.CloseStatus(err); code != StatusSlowConsumer {
		t.Fatalf("client: %v, want close 4008", err)
	}
	// The remaining items are still in order (the writer would stop at
	// done; this checks the ring).
	for i := 0; i < limit; i++ {
		it, ok := c.pop()
		if want := evs[(limit/2+i)%limit]; !ok || it.ev != want {
			t.Fatalf("item %d: got %v (ok %v), want event %d", i, it.ev, ok, (limit/2+i)%limit)
		}
	}
	for i := 0; i < burst-1; i++ {
		if it, ok := c.pop(); !ok || it.ev != evs[limit] {
			t.Fatalf("burst item %d: got %v (ok %v)", i, it.ev, ok)
		}
	}
	if _, ok := c.pop(); ok || cap(c.q) > queueKeep {
		t.Fatalf("drained queue keeps %d items of capacity", cap(c.q))
	}
}

// A queue that stays past SendQueue while its messages keep moving (the
// writer takes as much as is queued) is not a slow consumer, however long
// that lasts; once the writer stops taking, the connection is closed with
// 4008 after BehindTimeout to twice that.
func TestSendQueueBehindClock(t *testing.T) {
	const limit = 4
	c, cws := idleConn(t, limit)
	c.s.cfg.BehindTimeout = 100 * time.Millisecond
	ev := &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: "create", JSON: []byte("{}")}
	for i := 0; i < 3*limit; i++ {
		c.Deliver(ev)
	}
	// Moving: each item waits for 3*limit others, far less than
	// BehindTimeout, for five times BehindTimeout.
	start := time.Now()
	for time.Since(start) < 5*c.s.cfg.BehindTimeout {
		c.Deliver(ev)
		if _, ok := c.pop(); !ok {
			t.Fatal("queue empty")
		}
		if c.isDone() {
			t.Fatalf("closed after %v although the queue keeps moving", time.Since(start))
		}
	}
	// Stalled: nothing is taken any more.
	start = time.Now()
	for !c.isDone() {
		if time.Since(start) > 10*time.Second {
			t.Fatal("not closed 10 s after the writer stopped taking")
		}
		c.Deliver(ev)
	}
	if d := time.Since(start); d > 2*c.s.cfg.BehindTimeout+time.Second {
		t.Errorf("closed %v after the writer stopped taking, BehindTimeout is %v", d, c.s.cfg.BehindTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := cws.Read(ctx); websocket.CloseStatus(err) != StatusSlowConsumer {
		t.Fatalf("client: %v, want close 4008", err)
	}
}

// However fast it comes, a queue never holds more than HardQueue items:
// the one after closes with 4008 at once.
func TestSendQueueHardLimit(t *testing.T) {
	c, _ := idleConn(t, 1)
	c.s.cfg.BehindTimeout = time.Hour
	ev := &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: "create", JSON: []byte("{}")}
	for i := 0; i < HardQueue(1); i++ {
		c.Deliver(ev)
	}
	if c.isDone() || c.queued() != HardQueue(1) {
		t.Fatalf("closed %v with %d queued, want open with %d", c.isDone(), c.queued(), HardQueue(1))
	}
	c.Deliver(ev)
	if !c.isDone() {
		t.Fatalf("open with %d queued, HardQueue is %d", c.queued(), HardQueue(1))
	}
}
