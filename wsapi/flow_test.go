package wsapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// A client that stops reading is closed with 4008 once its queue
// overflows, while another client receives every event, in order, and the
// publisher is never held up.
func TestStalledClientClosed4008(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.SendQueue = 8 }})
	tok := adminToken(t)

	// The stalled client has a tiny receive buffer so that the server's
	// socket fills quickly.
	smallBuf := smallReceiveBuffer()
	ws, _, err := websocket.Dial(e.ctx, e.wsURL, &websocket.DialOptions{HTTPClient: smallBuf, HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	stalled := e.wrap(ws)
	stalled.sub("big")

	good := e.dial(tok)
	good.sub("big")
	received := make(chan string, 100000)
	goodErr := make(chan error, 1)
	go func() {
		for {
			m, err := good.readErr(30 * time.Second)
			if err != nil {
				goodErr <- err
				return
			}
			received <- m.str("position")
		}
	}()

	slowBefore := counterValue(t, metrics.SlowConsumerCloses)
	payload := strings.Repeat("x", 64<<10)
	var published []string
	var slowest time.Duration
	overflowed := false
	for i := 0; i < 2000 && !overflowed; i++ {
		start := time.Now()
		ev := e.publish(rec("big", "create", fmt.Sprint(i), "blob", payload))[0]
		slowest = max(slowest, time.Since(start))
		published = append(published, ev.Position.String())
		select { // lockstep with the good client: it keeps up
		case p := <-received:
			if p != ev.Position.String() {
				t.Fatalf("good client got %s, want %s", p, ev.Position)
			}
		case err := <-goodErr:
			t.Fatalf("good client: %v", err)
		case <-e.ctx.Done():
			t.Fatal("good client did not receive an event")
		}
		overflowed = counterValue(t, metrics.SlowConsumerCloses) > slowBefore
	}
	if !overflowed {
		t.Fatalf("stalled client never overflowed after %d events", len(published))
	}
	t.Logf("stalled client closed after %d events of 64 KiB; slowest publish %v", len(published), slowest)
	if slowest > 2*time.Second {
		t.Errorf("a publish took %v: the stalled client held up the publisher", slowest)
	}
	// The stalled client, reading again, drains what was buffered and then
	// gets 4008.
	n := 0
	for {
		_, _, err := stalled.ws.Read(e.ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != StatusSlowConsumer {
				t.Fatalf("stalled client: %v after %d frames, want close 4008", err, n)
			}
			break
		}
		n++
	}
	// The good client goes on receiving everything.
	for i := 0; i < 20; i++ {
		ev := e.publish(rec("big", "update", fmt.Sprint(i)))[0]
		if p := <-received; p != ev.Position.String() {
			t.Fatalf("good client got %s, want %s", p, ev.Position)
		}
	}
	e.waitFor("the stalled connection to go", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.conns) == 1
	})
}

// A stalled client whose queue never overflows (a quiet stream) is closed by
// the write timeout.
func TestStalledWriterTimesOut(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.WriteTimeout = 300 * time.Millisecond }})
	tok := adminToken(t)
	stalled := e.dial(tok)
	stalled.sub("big")
	slowBefore := counterValue(t, metrics.SlowConsumerCloses)
	payload := strings.Repeat("x", 1<<20)
	for i := 0; i < 64 && counterValue(t, metrics.SlowConsumerCloses) == slowBefore; i++ {
		e.publish(rec("big", "create", fmt.Sprint(i), "blob", payload))
		time.Sleep(50 * time.Millisecond)
	}
	e.waitFor("the write timeout", func() bool { return counterValue(t, metrics.SlowConsumerCloses) > slowBefore })
}

// Resume with since: no gap and no duplicate between replay and live, even
// while events are being published during the subscribe.
func TestResumeSince(t *testing.T) {
	e := newEnv(t, envOpts{history: 10000})
	tok := adminToken(t)
	c1 := e.dial(tok)
	c1.sub("posts")
	var all []string
	for i := 0; i < 3; i++ {
		for _, ev := range e.publish(rec("posts", "create", fmt.Sprint(i)), rec("other", "create", "x")) {
			if ev.Collection == "posts" {
				all = append(all, ev.Position.String())
			}
		}
	}
	got := c1.sync()
	if len(got) != 3 {
		t.Fatalf("got %d events", len(got))
	}
	last := got[2].str("position")
	c1.ws.Close(websocket.StatusNormalClosure, "")

	// Events published while the client is away, and during its subscribe.
	var mu sync.Mutex
	pub := func(i int) {
		ev := e.publish(rec("posts", "update", fmt.Sprint(i)))[0]
		mu.Lock()
		all = append(all, ev.Position.String())
		mu.Unlock()
	}
	for i := 0; i < 50; i++ {
		pub(i)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 50; i < 400; i++ {
			pub(i)
		}
	}()
	c2 := e.dial(tok)
	time.Sleep(5 * time.Millisecond)
	r, before := c2.request(msg{"type": "subscribe", "topics": []string{"posts.*"}, "since": last})
	if r.str("type") != "subscribed" || len(before) != 0 {
		t.Fatalf("reply %v after %v", r, before)
	}
	<-done
	rest := c2.sync()
	mu.Lock()
	want := all[slices.Index(all, last)+1:]
	mu.Unlock()
	if !slices.Equal(positions(rest), want) {
		t.Fatalf("after resume got %d events, want %d\n got %v\nwant %v", len(rest), len(want), positions(rest), want)
	}
}

func TestHistoryUnavailable(t *testing.T) {
	e := newEnv(t, envOpts{history: 5, since: 500 * time.Millisecond})
	var evs []*broker.Event
	for i := 0; i < 10; i++ {
		evs = append(evs, e.publish(rec("posts", "create", fmt.Sprint(i)))...)
	}
	c := e.dial(adminToken(t))
	c.expectError(msg{"type": "subscribe", "topics": []string{"posts"}, "since": evs[3].Position.String()}, "history_unavailable")
	// Nothing was subscribed.
	e.publish(rec("posts", "create", "x"))
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
	// The oldest resumable position is the one just before the history.
	// (11 events published, 5 retained: evs[6:] and x.)
	c.expectError(msg{"type": "subscribe", "topics": []string{"posts"}, "since": evs[4].Position.String()}, "history_unavailable")
	r, replay := c.request(msg{"type": "subscribe", "topics": []string{"posts"}, "since": evs[5].Position.String()})
	if r.str("type") != "subscribed" || len(replay) != 0 {
		t.Fatalf("got %v after %v", r, replay)
	}
	if replay = c.sync(); len(replay) != 5 || replay[0].str("position") != evs[6].Position.String() {
		t.Fatalf("replay %v", positions(replay))
	}
	// A position ahead of the stream waits for it, then answers.
	c2 := e.dial(adminToken(t))
	ahead := broker.Position{LSN: e.lsn.Load() + 0x100, Index: 1}
	go func() {
		time.Sleep(100 * time.Millisecond)
		e.publish(rec("posts", "create", "y"))
	}()
	r, replay = c2.request(msg{"type": "subscribe", "topics": []string{"posts"}, "since": ahead.String()})
	if r.str("type") != "subscribed" || r.str("position") != ahead.String() || len(replay) != 0 {
		t.Fatalf("ahead: got %v after %v", r, replay)
	}
	// Too far ahead: history_unavailable after the wait, during which live
	// events of the existing subscriptions keep flowing.
	start := time.Now()
	live := make(chan *broker.Event, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		live <- e.publish(rec("posts", "create", "z"))[0]
	}()
	r, during := c2.request(msg{"type": "subscribe", "topics": []string{"x"}, "since": "FF/0:1"})
	if r.str("code") != "history_unavailable" {
		t.Fatalf("far ahead: got %v", r)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("answered after %v without waiting", d)
	}
	if ev := <-live; len(during) != 1 || during[0].str("position") != ev.Position.String() {
		t.Fatalf("live event held back during the wait: got %v", during)
	}
}

func TestShutdown1001(t *testing.T) {
	e := newEnv(t, envOpts{})
	a, b := e.dial(""), e.dial(adminToken(t))
	b.sub("posts")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	for _, c := range []*client{a, b} {
		code, reason := c.expectClose(10 * time.Second)
		if code != websocket.StatusGoingAway || reason != "server shutting down" {
			t.Fatalf("close %d %q, want 1001", code, reason)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_, resp, err := e.dialRaw(dialOpt{})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade after shutdown: %v %v", err, resp)
	}
	if code, m, _ := e.httpDo("GET", "/readyz", "", ""); code != 503 || m["ready"] != false {
		t.Fatalf("readyz after shutdown: %d %v", code, m)
	}
}

// Shutdown is bounded by its context even when a client never answers.
func TestShutdownBounded(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.dial("") // never reads again: cannot finish a close handshake
	ctx, cancel := context.WithTimeout(e.ctx, 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	e.waitFor("connections to drop", func() bool { return e.srv.count.Load() == 0 })
}

// Replayed events pass the rules of the subscriber, like live ones.
func TestReplayFiltersWithRules(t *testing.T) {
	read := "auth.sub == record.user_id"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{"msgs": {Read: &read}}}})
	var evs []*broker.Event
	for i, who := range []string{"alice", "bob", "alice", "bob", "alice"} {
		evs = append(evs, e.publish(rec("msgs", "create", fmt.Sprint(i), "user_id", who))...)
	}
	alice := e.dial(token(t, "alice", "user", time.Hour))
	r, _ := alice.request(msg{"type": "subscribe", "topics": []string{"msgs"}, "since": evs[0].Position.String()})
	if r.str("type") != "subscribed" {
		t.Fatalf("got %v", r)
	}
	got := alice.sync()
	if want := []string{evs[2].Position.String(), evs[4].Position.String()}; !slices.Equal(positions(got), want) {
		t.Fatalf("replay %v, want %v", positions(got), want)
	}
	e.publish(rec("msgs", "create", "9", "user_id", "bob"), rec("msgs", "create", "10", "user_id", "alice"))
	if got := alice.sync(); len(got) != 1 || got[0].str("record_id") != "10" {
		t.Fatalf("live %v", got)
	}
}

// The connection and subscription gauges return to where they were when
// connections go, whatever they subscribed, unsubscribed or lost.
func TestGaugesBalance(t *testing.T) {
	e := newEnv(t, envOpts{})
	conns, subs := counterValue(t, metrics.Connections), counterValue(t, metrics.Subscriptions)
	delivered := counterValue(t, metrics.EventsDelivered.WithLabelValues("update"))
	a, b := e.dial(adminToken(t)), e.dial(adminToken(t))
	a.sub("x", "y", "z", "x")
	b.sub("x", "*")
	a.request(msg{"type": "unsubscribe", "topics": []string{"y", "nope"}})
	b.request(msg{"type": "auth", "token": token(t, "u", "user", time.Hour)}) // revokes both
	if got := counterValue(t, metrics.Subscriptions) - subs; got != 2 {
		t.Fatalf("subscriptions gauge +%v, want +2", got)
	}
	if got := counterValue(t, metrics.Connections) - conns; got != 2 {
		t.Fatalf("connections gauge +%v, want +2", got)
	}
	e.publish(rec("x", "update", "1"), rec("z", "update", "1"), rec("y", "update", "1"))
	a.sync()
	if got := counterValue(t, metrics.EventsDelivered.WithLabelValues("update")) - delivered; got != 2 {
		t.Fatalf("events_delivered{update} +%v, want +2", got)
	}
	a.ws.Close(websocket.StatusNormalClosure, "")
	b.ws.CloseNow()
	e.waitFor("gauges to balance", func() bool {
		return counterValue(t, metrics.Connections) == conns && counterValue(t, metrics.Subscriptions) == subs
	})
}
