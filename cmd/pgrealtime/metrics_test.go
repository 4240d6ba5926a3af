package main

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// scrape returns every sample of GET /metrics, keyed by `name{labels}`.
func scrape(ctx context.Context, t *testing.T, addr string) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsAfterTraffic drives a little of everything through a real
// process and checks that each metric of internal/metrics is exported with a
// plausible value.
func TestMetricsAfterTraffic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newServeSetup(t, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`, `CREATE TABLE audit_log (id serial PRIMARY KEY, what text)`)
	rulesFile := writeFile(t, "rules.yaml", `
collections:
  posts:
    read: "record.title != 'secret'"
  audit_log:
    events: false
default:
  read: "auth.role == 'admin'"
`)
	srv := s.start(ctx, t, "--config", rulesFile, "--subscribe-rate", "2")

	admin := dialWS(ctx, t, srv.addr, adminToken(t))
	if r, _ := admin.subscribe(ctx, "a", []string{"*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("admin subscribe *: %v", r)
	}
	userTok, err := signToken(testSecret, map[string]any{"sub": "u1", "role": "user", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	user := dialWS(ctx, t, srv.addr, userTok)
	if r, _ := user.subscribe(ctx, "u", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("user subscribe posts.*: %v", r)
	}

	// A collection never broadcast; committed first, so it has been
	// processed once the next transaction's events arrive.
	execSQL(ctx, t, s.url, `INSERT INTO audit_log (what) VALUES ('login')`)
	// Record events: one for everyone, one the rule withholds from the user.
	execSQL(ctx, t, s.url, `INSERT INTO posts (title) VALUES ('hello'), ('secret')`)
	// Custom events: a valid and a malformed NOTIFY, and one over HTTP.
	execSQL(ctx, t, s.url, `SELECT pg_notify('pgrealtime', '{"collection":"chat","event":"typing","data":{"user":"ann"}}')`)
	execSQL(ctx, t, s.url, `SELECT pg_notify('pgrealtime', 'this is not json')`)
	// A custom event on posts without a title: the user's rule cannot be
	// evaluated (rule error, withheld).
	execSQL(ctx, t, s.url, `SELECT pg_notify('pgrealtime', '{"collection":"posts","event":"poke","data":{}}')`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+srv.addr+"/api/broadcast",
		strings.NewReader(`{"collection":"chat","event":"ping","data":{"n":1}}`))
	req.Header.Set("Authorization", "Bearer "+adminToken(t))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/broadcast: %s", resp.Status)
	}
	got := map[string]int{}
	for got["hello"]+got["secret"] < 2 || got["chat"] < 2 || got["posts"] < 1 {
		ev := admin.nextEvent(ctx)
		switch ev.str("type") {
		case "record_event":
			got[recordTitle(ev)]++
		case "custom_event":
			got[ev.str("collection")]++
		}
	}
	if ev := user.nextEvent(ctx); recordTitle(ev) != "hello" {
		t.Fatalf("user got %v, want the hello row", ev)
	}

	// A refused token.
	_, r401, err := websocket.Dial(ctx, "ws://"+srv.addr+"/realtime?access_token=not.a.token", nil)
	if err == nil || r401 == nil || r401.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: %v %v", err, r401)
	}
	// Rate limiting: --subscribe-rate 2 allows a burst of 2; the user already spent 1.
	limited := false
	for i := 0; i < 6 && !limited; i++ {
		r, _ := user.subscribe(ctx, "rl"+strconv.Itoa(i), []string{"posts.*"}, "")
		limited = r.str("code") == "rate_limited"
	}
	if !limited {
		t.Fatal("no rate_limited reply after 6 quick subscribes at --subscribe-rate 2")
	}

	m := scrape(ctx, t, srv.addr)
	check := func(series string, ok func(float64) bool, what string) {
		t.Helper()
		v, present := m[series]
		if !present {
			t.Errorf("%s is missing from /metrics", series)
			return
		}
		if !ok(v) {
			t.Errorf("%s = %v, want %s", series, v, what)
		}
	}
	atLeast := func(n float64) (func(float64) bool, string) {
		return func(v float64) bool { return v >= n }, ">= " + strconv.FormatFloat(n, 'f', -1, 64)
	}
	c := func(series string, n float64) { f, w := atLeast(n); check(series, f, w) }
	now := float64(time.Now().Unix())
	c(`pgrealtime_connections`, 2)
	c(`pgrealtime_subscriptions`, 2)
	c(`pgrealtime_events_received_total{source="wal"}`, 2)
	c(`pgrealtime_events_received_total{source="notify"}`, 1)
	c(`pgrealtime_events_received_total{source="http"}`, 1)
	c(`pgrealtime_events_delivered_total{action="create"}`, 3)
	c(`pgrealtime_events_delivered_total{action="custom"}`, 2)
	c(`pgrealtime_events_dropped_by_rules_total{reason="read"}`, 1)
	c(`pgrealtime_events_dropped_by_rules_total{reason="rule_error"}`, 1)
	c(`pgrealtime_events_dropped_by_rules_total{reason="events_false"}`, 1)
	c(`pgrealtime_rule_errors_total{collection="posts"}`, 1)
	c(`pgrealtime_slow_consumer_closes_total`, 0)
	c(`pgrealtime_rate_limited_requests_total`, 1)
	c(`pgrealtime_tokens_rejected_total{reason="invalid"}`, 1)
	c(`pgrealtime_replication_lag_bytes`, 0)
	check(`pgrealtime_last_commit_timestamp_seconds`, func(v float64) bool { return v > now-300 && v < now+60 }, "within the last minutes")
	check(`pgrealtime_replication_lag_seconds`, func(v float64) bool { return v >= 0 && v < 60 }, "between 0 and 60")
	c(`pgrealtime_slot_retained_wal_bytes`, 0)
	c(`pgrealtime_bad_payloads_total{source="notify"}`, 1)
	c(`pgrealtime_transactions_total`, 2)
	check(`pgrealtime_stream_connected`, func(v float64) bool { return v == 1 }, "1")

	// A dropped replication connection is counted as a reconnect.
	execSQL(ctx, t, s.url, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, s.slot)
	for {
		m = scrape(ctx, t, srv.addr)
		if m[`pgrealtime_reconnects_total{conn="replication"}`] >= 1 && m[`pgrealtime_stream_connected`] == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no reconnect counted after terminating the replication backend: reconnects %v, connected %v",
				m[`pgrealtime_reconnects_total{conn="replication"}`], m[`pgrealtime_stream_connected`])
		case <-time.After(200 * time.Millisecond):
		}
	}

	// A client that never reads, and a burst bigger than its send queue
	// plus the socket buffers: it is closed with 4008 and counted.
	stalled := dialWS(ctx, t, srv.addr, adminToken(t))
	if r, _ := stalled.subscribe(ctx, "s", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("stalled subscribe: %v", r)
	}
	execSQL(ctx, t, s.url, `INSERT INTO posts (title) SELECT repeat('x', 2000) FROM generate_series(1, 10000)`)
	for m[`pgrealtime_slow_consumer_closes_total`] < 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("no slow-consumer close counted for a client that never reads")
		case <-time.After(200 * time.Millisecond):
		}
		m = scrape(ctx, t, srv.addr)
	}
	if _, err := stalled.read(ctx); err == nil {
		for err == nil {
			_, err = stalled.read(ctx)
		}
		if websocket.CloseStatus(err) != 4008 {
			t.Errorf("stalled client closed with %v, want 4008", err)
		}
	}
}
