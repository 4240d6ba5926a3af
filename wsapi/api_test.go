package wsapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

func TestBroadcastHTTP(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := adminToken(t)
	coll, room1, room2 := e.dial(admin), e.dial(admin), e.dial(admin)
	coll.sub("chat")
	room1.sub("chat.room1")
	room2.sub("chat.room2")
	recvBefore := counterValue(t, metrics.EventsReceived.WithLabelValues("http"))

	code, m, raw := e.httpDo("POST", "/api/broadcast", admin, `{"collection":"chat","event":"typing","record_id":"room1","data":{"user":"ann",
		"n": 1}}`)
	if code != http.StatusAccepted || m["accepted"] != true {
		t.Fatalf("got %d %s", code, raw)
	}
	got := room1.sync()
	if len(got) != 1 {
		t.Fatalf("room1 got %v", got)
	}
	ev := got[0]
	if ev.str("type") != "custom_event" || ev.str("collection") != "chat" || ev.str("event") != "typing" || ev.str("record_id") != "room1" {
		t.Fatalf("event %v", ev)
	}
	if d, _ := ev["data"].(map[string]any); d["user"] != "ann" || d["n"] != 1.0 {
		t.Fatalf("data %v", ev["data"])
	}
	if _, has := ev["position"]; has {
		t.Fatalf("live event has a position: %v", ev)
	}
	if ts, err := time.Parse(time.RFC3339Nano, ev.str("timestamp")); err != nil || time.Since(ts) > time.Minute {
		t.Fatalf("timestamp %q", ev.str("timestamp"))
	}
	if got := room2.sync(); len(got) != 0 {
		t.Fatalf("room2 got %v", got)
	}
	// Without record_id only collection-level patterns match.
	if code, _, raw := e.httpDo("POST", "/api/broadcast", admin, `{"collection":"chat","event":"hello"}`); code != 202 {
		t.Fatalf("got %d %s", code, raw)
	}
	if got := room1.sync(); len(got) != 0 {
		t.Fatalf("room1 got %v", got)
	}
	if got = coll.sync(); len(got) != 2 || got[1].str("event") != "hello" {
		t.Fatalf("collection subscriber got %v", got)
	}
	if _, has := got[1]["data"]; has {
		t.Fatalf("event without data has data: %v", got[1])
	}
	if d := counterValue(t, metrics.EventsReceived.WithLabelValues("http")) - recvBefore; d != 2 {
		t.Fatalf("events_received{http} grew by %v", d)
	}

	// Authorization.
	for name, tc := range map[string]struct {
		tok    string
		status int
	}{
		"no token":      {"", 401},
		"garbage":       {"xyz", 401},
		"expired admin": {token(t, "root", "admin", -time.Minute), 401},
		"user":          {token(t, "u1", "user", time.Hour), 403},
		"anonymous-ish": {token(t, "", "", time.Hour), 403},
	} {
		code, m, raw := e.httpDo("POST", "/api/broadcast", tc.tok, `{"collection":"chat","event":"x"}`)
		if code != tc.status || m["error"] == nil || m["message"] == nil {
			t.Errorf("%s: got %d %s, want %d with a JSON error", name, code, raw, tc.status)
		}
	}

	// Bad bodies.
	badBefore := counterValue(t, metrics.BadPayloads.WithLabelValues("http"))
	bad := map[string]string{
		"not json":            `hello`,
		"array":               `[1]`,
		"missing collection":  `{"event":"x"}`,
		"missing event":       `{"collection":"chat"}`,
		"empty collection":    `{"collection":"","event":"x"}`,
		"dot in collection":   `{"collection":"a.b","event":"x"}`,
		"star collection":     `{"collection":"*","event":"x"}`,
		"question collection": `{"collection":"a?b","event":"x"}`, // a topic could not name it
		"number event":        `{"collection":"chat","event":5}`,
		"number record_id":    `{"collection":"chat","event":"x","record_id":5}`,
		"empty record_id":     `{"collection":"chat","event":"x","record_id":""}`,
		"unknown field":       `{"collection":"chat","event":"x","recordId":"1"}`,
		"trailing data":       `{"collection":"chat","event":"x"} {}`,
		"too big":             `{"collection":"chat","event":"x","data":"` + strings.Repeat("x", MaxBroadcastBytes) + `"}`,
		"empty":               ``,
	}
	for name, body := range bad {
		code, m, raw := e.httpDo("POST", "/api/broadcast", admin, body)
		if code != http.StatusBadRequest || m["error"] != "bad_request" || m["message"] == "" {
			t.Errorf("%s: got %d %.200s", name, code, raw)
		}
	}
	if d := counterValue(t, metrics.BadPayloads.WithLabelValues("http")) - badBefore; d != float64(len(bad)) {
		t.Errorf("bad_payloads{http} grew by %v, want %d", d, len(bad))
	}
	for _, c := range []*client{coll, room1, room2} {
		if got := c.sync(); len(got) != 0 {
			t.Fatalf("a refused broadcast was delivered: %v", got)
		}
	}
	if code, _, _ := e.httpDo("GET", "/api/broadcast", admin, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/broadcast: %d", code)
	}
}

// Without a verifier the admin APIs answer loopback callers only.
func TestAdminAPIsLoopbackOnly(t *testing.T) {
	e := newEnv(t, envOpts{noAuth: true})
	if code, _, raw := e.httpDo("POST", "/api/broadcast", "", `{"collection":"chat","event":"x"}`); code != 202 {
		t.Fatalf("loopback broadcast: %d %s", code, raw)
	}
	if code, _, raw := e.httpDo("GET", "/api/connections", "", ""); code != 200 {
		t.Fatalf("loopback connections: %d %s", code, raw)
	}
	for _, path := range []string{"/api/broadcast", "/api/connections"} {
		method := "GET"
		if path == "/api/broadcast" {
			method = "POST"
		}
		req := httptest.NewRequest(method, path, strings.NewReader(`{"collection":"chat","event":"x"}`))
		req.RemoteAddr = "203.0.113.7:5555"
		w := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(w, req)
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), `"error"`) {
			t.Errorf("%s from a remote address: %d %s", path, w.Code, w.Body)
		}
	}
}

func TestConnectionsAPI(t *testing.T) {
	e := newEnv(t, envOpts{})
	admin := adminToken(t)
	c := e.dial(token(t, "alice", "admin", time.Hour, "team", "blue"))
	c.sub("posts.*", "comments.1", "*")
	anon := e.dial("")

	var list []connectionInfo
	code, _, raw := e.httpDo("GET", "/api/connections", admin, "")
	if code != 200 {
		t.Fatalf("got %d %s", code, raw)
	}
	if err := jsonUnmarshal(raw, &list); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	byID := map[string]connectionInfo{}
	for _, ci := range list {
		byID[ci.ID] = ci
	}
	ci, ok := byID[c.connected.str("connection_id")]
	if !ok || len(list) != 2 {
		t.Fatalf("connections %s", raw)
	}
	if ci.Subject != "alice" || ci.Role != "admin" || ci.Claims["team"] != "blue" || strings.Join(ci.Subscriptions, " ") != "* comments.1 posts.*" ||
		ci.RemoteAddr == "" || time.Since(ci.ConnectedAt) > time.Minute || ci.Queued < 0 {
		t.Fatalf("alice: %+v", ci)
	}
	if a := byID[anon.connected.str("connection_id")]; !a.Anonymous || len(a.Subscriptions) != 0 {
		t.Fatalf("anonymous: %+v", a)
	}
	for _, tc := range []struct {
		tok    string
		status int
	}{{"", 401}, {token(t, "u", "user", time.Hour), 403}, {"bad", 401}} {
		if code, _, raw := e.httpDo("GET", "/api/connections", tc.tok, ""); code != tc.status {
			t.Errorf("token %q: %d %s", tc.tok, code, raw)
		}
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	var mu sync.Mutex
	ready, reason := false, "replication stream not connected"
	e := newEnv(t, envOpts{cfg: func(c *Config) {
		c.Ready = func() (bool, string) { mu.Lock(); defer mu.Unlock(); return ready, reason }
	}})
	if code, m, _ := e.httpDo("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("healthz %d %v", code, m)
	}
	code, m, raw := e.httpDo("GET", "/readyz", "", "")
	if code != 503 || m["ready"] != false || m["reason"] != reason {
		t.Fatalf("readyz %d %s", code, raw)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	if code, _, raw := e.httpDo("GET", "/readyz", "", ""); code != 200 || strings.TrimSpace(string(raw)) != `{"ready":true}` {
		t.Fatalf("readyz %d %s", code, raw)
	}
	c := e.dial(adminToken(t))
	c.sub("posts")
	e.publish(rec("posts", "create", "1"))
	c.sync()
	_, _, raw = e.httpDo("GET", "/metrics", "", "")
	for _, want := range []string{"pgrealtime_connections ", "pgrealtime_subscriptions ", `pgrealtime_events_delivered_total{action="create"}`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if code, m, raw := e.httpDo("GET", "/realtime", "", ""); code != http.StatusUpgradeRequired || m["error"] != "upgrade_required" {
		t.Errorf("plain GET /realtime: %d %s", code, raw)
	}
	if code, _, _ := e.httpDo("GET", "/", "", ""); code != 404 {
		t.Errorf("GET / without inspector: %d", code)
	}
}

func TestInspectorMounted(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) {
		c.Inspector = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "inspector") })
	}})
	if code, _, raw := e.httpDo("GET", "/", "", ""); code != 200 || string(raw) != "inspector" {
		t.Fatalf("GET / %d %s", code, raw)
	}
	if code, _, _ := e.httpDo("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("healthz shadowed by the inspector")
	}
}
