package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/client"
	"github.com/pgrealtime/pgrealtime/internal/proctest"
)

// TestResumeAcrossKill: rows stream while pgrealtime is SIGKILLed and
// started again; the app receives every row exactly once, in order.
func TestResumeAcrossKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t)
	var st states
	// A backoff long enough for the restarted server to publish the rows
	// written while it was down before the client is back: they reach the
	// client only through the resume.
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{MinBackoff: 1500 * time.Millisecond, MaxBackoff: 3 * time.Second, OnState: st.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub := subscribe(ctx, t, c, "posts.*")
	const n = 300
	written := e.writer(ctx, 1, n, 5*time.Millisecond)
	first := collectIDs(ctx, t, sub, 50)
	e.srv.Kill()
	e.srv.Restart()
	rest := collectIDs(ctx, t, sub, n-50)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	checkSequence(t, append(first, rest...), 1, n)
	if st.count(client.StateReconnecting) == 0 {
		t.Fatal("the client never reconnected: the kill was not noticed")
	}
}

// TestStalledConsumerRecovers: an app that stops reading gets its
// connection closed with 4008 by the server; the client resumes by itself
// and, once the app reads again, every row arrives once, in order.
func TestStalledConsumerRecovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, "--send-queue", "8")
	e.rowBytes = 64 << 10 // 400 rows: 25 MiB, more than the socket buffers hold
	var st states
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{EventBuffer: 4, MinBackoff: 50 * time.Millisecond, OnState: st.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub := subscribe(ctx, t, c, "posts.*")
	const n = 400
	if err := <-e.writer(ctx, 1, n, 0); err != nil {
		t.Fatal(err)
	}
	// The app has not read anything: wait until the server gave up on it.
	waitMetric(ctx, t, e, "pgrealtime_slow_consumer_closes_total")
	ids := collectIDs(ctx, t, sub, n)
	checkSequence(t, ids, 1, n)
	if st.count(client.StateReconnecting) == 0 {
		t.Fatal("no reconnect although the server closed the connection with 4008")
	}
}

// waitMetric waits until a counter on /metrics is above zero.
func waitMetric(ctx context.Context, t *testing.T, e *env, name string) {
	t.Helper()
	waitMetricAtLeast(ctx, t, e, name, 1)
}

// waitMetricAtLeast waits until a counter on /metrics reaches min.
func waitMetricAtLeast(ctx context.Context, t *testing.T, e *env, name string, min float64) {
	t.Helper()
	for {
		resp, err := http.Get("http://" + e.srv.Addr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(body), "\n") {
				if v, ok := strings.CutPrefix(line, name+" "); ok {
					if f, err := strconv.ParseFloat(v, 64); err == nil && f >= min {
						return
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never reached %v", name, min)
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
}

// TestTokenRefreshKeepsConnection: short-lived tokens are refreshed with an
// auth message before they expire; the connection is never cut.
func TestTokenRefreshKeepsConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t)
	var calls atomic.Int32
	var st states
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{
		GetToken: func(context.Context) (string, error) {
			calls.Add(1)
			return token(t, "ann", 3*time.Second), nil
		},
		OnState: st.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub := subscribe(ctx, t, c, "posts.*")
	// Three tokens of 3 s: the first would have expired twice over.
	for calls.Load() < 4 {
		select {
		case <-ctx.Done():
			t.Fatal("tokens were not refreshed")
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
	e.exec(ctx, `INSERT INTO posts (id, title) VALUES (1, 'after refreshes')`)
	checkSequence(t, collectIDs(ctx, t, sub, 1), 1, 1)
	if n := st.count(client.StateReconnecting); n != 0 {
		t.Fatalf("the connection was cut %d times although the token was refreshed", n)
	}
}

// TestExpiryWithoutRefresh: with proactive refresh off, the server closes
// with 4001 at expiry; the client gets a new token, reconnects and resumes
// with nothing lost.
func TestExpiryWithoutRefresh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t)
	var calls atomic.Int32
	var st states
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{
		GetToken: func(context.Context) (string, error) {
			calls.Add(1)
			return token(t, "ann", 2*time.Second), nil
		},
		RefreshBefore: -1,
		MinBackoff:    50 * time.Millisecond,
		OnState:       st.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub := subscribe(ctx, t, c, "posts.*")
	written := e.writer(ctx, 1, 150, 30*time.Millisecond) // 4.5 s: across at least one expiry
	ids := collectIDs(ctx, t, sub, 150)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	checkSequence(t, ids, 1, 150)
	if calls.Load() < 2 || st.count(client.StateReconnecting) == 0 {
		t.Fatalf("expected a 4001 close and a new token: GetToken calls %d, reconnects %d", calls.Load(), st.count(client.StateReconnecting))
	}
}

// TestHistoryUnavailableGap: an app that stalls until the server closed
// it (4008) and more events than the server's history went by gets one gap
// event when it reads again, then live events.
func TestHistoryUnavailableGap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, "--history-size", "5", "--send-queue", "8")
	e.rowBytes = 64 << 10 // more than the socket buffers hold: the server's queue overflows
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{EventBuffer: 2, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub := subscribe(ctx, t, c, "posts.*")
	if err := <-e.writer(ctx, 1, 200, 0); err != nil {
		t.Fatal(err)
	}
	waitMetric(ctx, t, e, "pgrealtime_slow_consumer_closes_total")
	// Every row published (so that what follows the gap is only live).
	waitMetricAtLeast(ctx, t, e, "pgrealtime_transactions_total", 200)
	var gaps int
	var before, afterGap []int
	for {
		var ev client.Event
		select {
		case ev = <-sub.Events():
		case <-ctx.Done():
			t.Fatalf("no live event after the gap (gaps %d, events %v)", gaps, before)
		}
		if ev.Type == client.TypeGap {
			gaps++
			// Live again once the client is connected: then a new row
			// must arrive.
			for c.State() != client.StateConnected {
				select {
				case <-ctx.Done():
					t.Fatal("not connected again after the gap")
				case <-time.After(10 * time.Millisecond): // polling interval
				}
			}
			e.exec(ctx, `INSERT INTO posts (id, title) VALUES (1000, 'live')`)
			continue
		}
		id := recordID(t, ev)
		if id == 1000 {
			break
		}
		if gaps > 0 {
			// Live events: rows the server had not published yet when
			// the subscription went live again.
			if n := len(afterGap); n > 0 && id <= afterGap[n-1] {
				t.Fatalf("row %d after row %d following the gap", id, afterGap[n-1])
			}
			afterGap = append(afterGap, id)
			continue
		}
		before = append(before, id)
	}
	if gaps != 1 {
		t.Fatalf("got %d gap events, want exactly 1 (events before: %v)", gaps, before)
	}
	checkSequence(t, before, 1, len(before))
	if len(afterGap) > 0 && afterGap[0] <= len(before)+5 {
		t.Fatalf("rows %v right after %v followed a gap: the resume should have worked", afterGap[:1], len(before))
	}
}

// TestUnsubscribeStopsDelivery: after Unsubscribe its Events closes and no
// event of its topics is delivered; other subscriptions go on.
func TestUnsubscribeStopsDelivery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newEnv(t)
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	posts := subscribe(ctx, t, c, "posts.*")
	comments := subscribe(ctx, t, c, "comments.*")
	if err := posts.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	e.exec(ctx, `INSERT INTO posts (id, title) VALUES (1, 'x')`)
	e.exec(ctx, `INSERT INTO comments (id, body) VALUES (1, 'after the post')`)
	// The comment was committed after the post: once it is here, the post
	// would have been too.
	select {
	case ev := <-comments.Events():
		if ev.Collection != "comments" {
			t.Fatalf("comments got %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no comment event")
	}
	if ev, ok := <-posts.Events(); ok {
		t.Fatalf("event after Unsubscribe: %+v", ev)
	}
}

// TestThousandSubscriptions: 1 000 subscriptions on one connection, each to
// one record; each gets its own row and nothing else.
func TestThousandSubscriptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, "--max-subscriptions", "1001", "--subscribe-rate", "100000")
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 1000
	subs := make([]*client.Subscription, n+1)
	for i := 1; i <= n; i++ {
		if subs[i], err = c.Subscribe(ctx, []string{fmt.Sprintf("posts.%d", i)}, ""); err != nil {
			t.Fatalf("subscription %d: %v", i, err)
		}
	}
	barrier := subscribe(ctx, t, c, "comments.*")
	if _, err := c.Subscribe(ctx, []string{"comments.1"}, ""); err == nil {
		t.Fatal("subscription 1002 accepted with --max-subscriptions 1001")
	} else if e := (*client.Error)(nil); !errors.As(err, &e) || e.Code != "too_many_subscriptions" {
		t.Fatalf("subscription 1002: %v, want too_many_subscriptions", err)
	}
	e.exec(ctx, `INSERT INTO posts (id, title) SELECT g, 'p' FROM generate_series(1, 1000) g`)
	for i := 1; i <= n; i++ {
		got := collectIDs(ctx, t, subs[i], 1)
		if got[0] != i {
			t.Fatalf("subscription posts.%d got row %d", i, got[0])
		}
	}
	// Committed after the posts: once it is here, any extra post event
	// would be queued already.
	e.exec(ctx, `INSERT INTO comments (id, body) VALUES (1, 'barrier')`)
	collectIDs(ctx, t, barrier, 1)
	for i := 1; i <= n; i++ {
		select {
		case ev := <-subs[i].Events():
			t.Fatalf("subscription posts.%d got a second event %+v", i, ev)
		default:
		}
	}
}

// TestRefusedTokenEndsClient: a token the server refuses, with no GetToken,
// is an error from Dial, not a retry loop.
func TestRefusedTokenEndsClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newEnv(t)
	_, err := client.Dial(ctx, e.srv.URL(), client.Options{Token: "not-a-jwt"})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Dial with a bad token: %v, want an HTTP 401 refusal", err)
	}
}

// TestQuietSubscriptionNoGap: a subscription that matched nothing while
// more events than the server's history went by resumes without a gap
// after a restart of the server (it has missed nothing).
func TestQuietSubscriptionNoGap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, "--history-size", "5")
	var st states
	c, err := client.Dial(ctx, e.srv.URL(), client.Options{MinBackoff: 50 * time.Millisecond, OnState: st.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	posts := subscribe(ctx, t, c, "posts.*")
	quiet := subscribe(ctx, t, c, "comments.*")
	if err := <-e.writer(ctx, 1, 30, 0); err != nil {
		t.Fatal(err)
	}
	checkSequence(t, collectIDs(ctx, t, posts, 30), 1, 30)
	e.srv.Stop()
	e.srv.Restart()
	e.exec(ctx, `INSERT INTO comments (id, body) VALUES (7, 'after the restart')`)
	e.exec(ctx, `INSERT INTO posts (id, title) VALUES (31, 'after the restart')`)
	if got := collectIDs(ctx, t, quiet, 1); got[0] != 7 { // fails on a gap event
		t.Fatalf("quiet subscription got row %d", got[0])
	}
	checkSequence(t, collectIDs(ctx, t, posts, 1), 31, 31)
	if st.count(client.StateReconnecting) == 0 {
		t.Fatal("no reconnect: the restart was not noticed")
	}
}

// TestStreamNotStarted: a server whose Postgres has been unreachable since
// it started refuses a subscribe with history_unavailable; the client
// returns that error (no gap event, no retry loop) and Dial still works.
func TestStreamNotStarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := proctest.StartUnready(t, []string{"--database-url", "postgres://nobody@127.0.0.1:1/none", "--config", writeRules(t)})
	c, err := client.Dial(ctx, srv.URL(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Subscribe(ctx, []string{"posts.*"}, "")
	var e *client.Error
	if !errors.As(err, &e) || e.Code != "history_unavailable" {
		t.Fatalf("Subscribe before the stream started: %v, want history_unavailable", err)
	}
	if c.State() != client.StateConnected {
		t.Fatalf("client state %v after a refused subscribe, want connected", c.State())
	}
}
