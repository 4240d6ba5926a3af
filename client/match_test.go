package client

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAfter(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"0/16B3748:2", "0/16B3748:1", true},
		{"0/16B3748:1", "0/16B3748:2", false},
		{"0/16B3748:10", "0/16B3748:9", true}, // numeric, not text, order
		{"1/0:1", "0/FFFFFFFF:5", true},
		{"0/16B3748:1", "0/16B3748:1", false},
	}
	for _, c := range cases {
		if got := after(c.a, c.b); got != c.want {
			t.Errorf("after(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

func TestTopicMatches(t *testing.T) {
	ev := func(coll, id, rec string) *Event {
		return &Event{Type: TypeRecord, Collection: coll, Action: "create", RecordID: id, Record: json.RawMessage(rec)}
	}
	cases := []struct {
		topic string
		ev    *Event
		want  bool
	}{
		{"*", ev("posts", "1", `{}`), true},
		{"posts", ev("posts", "1", `{}`), true},
		{"posts.*", ev("comments", "1", `{}`), false},
		{"posts.1", ev("posts", "2", `{}`), false},
		{"posts.a.b", ev("posts", "a.b", `{}`), true},
		{"posts?user_id=eq.ann", ev("posts", "1", `{"user_id":"ann"}`), true},
		{"posts?user_id=eq.ann", ev("posts", "1", `{"user_id":"bob"}`), false},
		{"posts?n=gt.9", ev("posts", "1", `{"n":10}`), true}, // numbers, not text
		{"posts?n=lt.9", ev("posts", "1", `{"n":10}`), false},
		{`posts?s=in.(paid,"a,b")`, ev("posts", "1", `{"s":"a,b"}`), true},
		{"posts?s=in.(paid,shipped)", ev("posts", "1", `{"s":"new"}`), false},
		{"posts?d=is.null", ev("posts", "1", `{"d":null}`), true},
		{"posts?ok=is.true", ev("posts", "1", `{"ok":false}`), false},
		{"posts?x=eq.1", ev("posts", "1", `{}`), false}, // unknown column never matches
		{"posts?x=eq.1&y=eq.2", ev("posts", "1", `{"x":1,"y":2}`), true},
		{"posts?x=eq.1&y=eq.2", ev("posts", "1", `{"x":1,"y":3}`), false},
	}
	for _, c := range cases {
		if got := parseTopic(c.topic).matches(c.ev); got != c.want {
			t.Errorf("%s matches %s = %v", c.topic, c.ev.Record, got)
		}
	}
	custom := &Event{Type: TypeCustom, Collection: "chat", Event: "typing", Data: json.RawMessage(`{"room":"a"}`)}
	if !parseTopic("chat?room=eq.a").matches(custom) || parseTopic("chat?room=eq.b").matches(custom) {
		t.Error("custom events match filters on data")
	}
	trunc := &Event{Type: TypeRecord, Collection: "posts", Action: "truncate"}
	if !parseTopic("posts?x=eq.1").matches(trunc) {
		t.Error("truncate matches every filter")
	}
}

func TestRefreshDelay(t *testing.T) {
	now := time.Unix(1000, 0)
	if d, ok := refreshDelay(now, now.Add(8*time.Second), 0); !ok || d != 6*time.Second {
		t.Errorf("8 s token: refresh in %v, want 6s (a quarter before)", d)
	}
	if d, ok := refreshDelay(now, now.Add(time.Hour), 0); !ok || d != time.Hour-30*time.Second {
		t.Errorf("1 h token: refresh in %v, want 30 s before exp", d)
	}
	if _, ok := refreshDelay(now, now.Add(time.Hour), -1); ok {
		t.Error("negative lead refreshes")
	}
	if _, ok := refreshDelay(now, time.Time{}, 0); ok {
		t.Error("token without exp refreshes")
	}
}

func TestTokenExpiry(t *testing.T) {
	// {"alg":"HS256"}.{"exp":1700000000}.sig
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2ln"
	if got := tokenExpiry(tok); got.Unix() != 1700000000 {
		t.Errorf("exp = %v", got)
	}
	if !tokenExpiry("opaque").IsZero() {
		t.Error("non-JWT has an expiry")
	}
}

// TestTopicMatchesLikeServer: the cases where a naive client would differ
// from the server's filters (broker/filtermatch.go).
func TestTopicMatchesLikeServer(t *testing.T) {
	ev := func(rec string) *Event {
		return &Event{Type: TypeRecord, Collection: "posts", Action: "create", RecordID: "1", Record: json.RawMessage(rec)}
	}
	cases := []struct {
		topic, rec string
		want       bool
	}{
		{"posts?n=neq.abc", `{"n":5}`, false},      // a number never matches a non-number value
		{"posts?n=eq.100.50", `{"n":100.5}`, true}, // exact decimals
		{"posts?n=eq.0.3", `{"n":0.30000000000000004}`, false},
		{`posts?s=in.("a&b",c)&t=eq.1`, `{"s":"a&b","t":1}`, true}, // & inside quotes
		{`posts?s=in.("say \"hi\"")`, `{"s":"say \"hi\""}`, true},  // escapes
		// json values compare as compact JSON, however the payload was written
		// (custom events carry their data as written: {"m": {"a": 1}})
		{`posts?m=eq.{"a":1}`, `{"m": {"a": 1}}`, true},
		{`posts?m=in.("{\"a\":1}")`, `{"m": {"a": 1}}`, true},
	}
	for _, c := range cases {
		if got := parseTopic(c.topic).matches(ev(c.rec)); got != c.want {
			t.Errorf("%s matches %s = %v, want %v", c.topic, c.rec, got, c.want)
		}
	}
}
