package wsapi

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// The counters count what their help texts (internal/metrics) say.
func TestMetricsCountWhatTheirHelpSays(t *testing.T) {
	delivered := metrics.EventsDelivered.WithLabelValues("create")
	eventsFalse := metrics.EventsDroppedByRules.WithLabelValues("events_false")
	off, all := false, "true"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{
		"posts": {Read: &all}, "audit": {Events: &off},
	}}})
	a, b := e.dial(adminToken(t)), e.dial(adminToken(t))
	a.sub("*")
	b.sub("*")

	// events_delivered_total: one per event and subscriber that got it,
	// replays included.
	before := counterValue(t, delivered)
	evs := e.publish(rec("posts", "create", "1"), rec("posts", "create", "2"), rec("posts", "create", "3"))
	if got := len(a.sync()) + len(b.sync()); got != 6 {
		t.Fatalf("the subscribers got %d events, want 6", got)
	}
	if d := counterValue(t, delivered) - before; d != 6 {
		t.Errorf("events_delivered_total{create} grew by %v for 3 events to 2 subscribers, want 6", d)
	}
	c := e.dial(adminToken(t))
	if r, _ := c.request(msg{"type": "subscribe", "topics": []string{"posts"}, "since": evs[0].Position.String()}); r.str("type") != "subscribed" {
		t.Fatalf("resume: %v", r)
	}
	if got := len(c.sync()); got != 2 {
		t.Fatalf("the resumed subscriber got %d events, want 2", got)
	}
	if d := counterValue(t, delivered) - before; d != 8 {
		t.Errorf("events_delivered_total{create} grew by %v with 2 replayed, want 8", d)
	}

	// events_dropped_by_rules_total{reason="events_false"}: once per event,
	// whatever the number of subscribers.
	before = counterValue(t, eventsFalse)
	e.publish(rec("audit", "create", "1"))
	if got := len(a.sync()) + len(b.sync()); got != 0 {
		t.Fatalf("an events: false collection reached subscribers: %d events", got)
	}
	if d := counterValue(t, eventsFalse) - before; d != 1 {
		t.Errorf("events_dropped_by_rules_total{events_false} grew by %v for one event and 2 subscribers of *, want 1", d)
	}
}

// slow_consumer_closes_total counts a write that timed out too, not only a
// queue that overflowed: one transaction (one queue item) bigger than the
// socket buffers, to a client that does not read, under a short write
// timeout.
func TestSlowConsumerClosesCountsWriteTimeouts(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) {
		c.SendQueue = 100000
		c.WriteTimeout = 300 * time.Millisecond
	}})
	stalled := e.dial(adminToken(t))
	stalled.sub("big")
	before := counterValue(t, metrics.SlowConsumerCloses)
	payload := strings.Repeat("x", 64<<10)
	var tx []*broker.Event
	for i := 0; i < 128; i++ { // 8 MiB in one queue item
		tx = append(tx, rec("big", "create", fmt.Sprint(i), "blob", payload))
	}
	e.publish(tx...)
	e.waitFor("the 4008 close", func() bool { return counterValue(t, metrics.SlowConsumerCloses) > before })
	if code, _ := stalled.expectClose(10 * time.Second); code != StatusSlowConsumer {
		t.Fatalf("close code %d, want 4008", code)
	}
}
