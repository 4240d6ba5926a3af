package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

func counter(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func str(s string) *string { return &s }

func compile(t testing.TB, yml string) *Set {
	t.Helper()
	var cfg Config
	if err := yaml.Unmarshal([]byte(yml), &cfg); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	s, err := Compile(&cfg, "admin")
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if tt, ok := t.(*testing.T); ok {
		s.Log = zerolog.New(zerolog.NewTestWriter(tt))
	}
	return s
}

func user(sub, role string, extra ...any) *auth.Identity {
	claims := map[string]any{"sub": sub}
	if role != "" {
		claims["role"] = role
	}
	for i := 0; i+1 < len(extra); i += 2 {
		claims[extra[i].(string)] = extra[i+1]
	}
	return &auth.Identity{Subject: sub, Role: role, Claims: claims}
}

var admin = user("root", "admin")

func rec(action, coll string, cols ...any) *broker.Event {
	ev := &broker.Event{Kind: broker.KindRecord, Collection: coll, Action: action, Timestamp: time.Now()}
	for i := 0; i+1 < len(cols); i += 2 {
		ev.Record = append(ev.Record, broker.Column{Name: cols[i].(string), Value: cols[i+1]})
	}
	return ev
}

func custom(coll, data string) *broker.Event {
	return &broker.Event{Kind: broker.KindCustom, Collection: coll, Name: "ping", Data: json.RawMessage(data), Timestamp: time.Now()}
}

func pat(t testing.TB, s string) broker.Pattern {
	t.Helper()
	p, err := broker.ParsePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		msg  []string
	}{
		{"syntax", Config{Collections: map[string]Collection{"posts": {Read: str("auth.sub ==")}}},
			[]string{`collection "posts"`, "Syntax error"}},
		{"non-bool int", Config{Collections: map[string]Collection{"posts": {Read: str("1 + 2")}}},
			[]string{`collection "posts"`, "must be a boolean expression, but it gives int"}},
		{"non-bool string", Config{Collections: map[string]Collection{"audit:logins": {Read: str("collection")}}},
			[]string{`collection "audit:logins"`, "must be a boolean expression"}},
		{"unknown variable", Config{Collections: map[string]Collection{"posts": {Read: str("user.id == record.user_id")}}},
			[]string{`collection "posts"`, "undeclared reference to 'user'"}},
		{"unknown function", Config{Collections: map[string]Collection{"posts": {Read: str("isOwner(auth)")}}},
			[]string{`collection "posts"`, "undeclared reference to 'isOwner'"}},
		{"empty rule", Config{Collections: map[string]Collection{"posts": {Read: str("  ")}}},
			[]string{`collection "posts"`, "read rule is empty"}},
		{"bad default", Config{Default: &Collection{Read: str("auth.role = 'x'")}},
			[]string{"default:", "does not compile"}},
		{"dotted name", Config{Collections: map[string]Collection{"public.posts": {Read: str("true")}}},
			[]string{`collection "public.posts"`, "schema:table"}},
		{"empty omit", Config{Collections: map[string]Collection{"posts": {OmitColumns: []string{""}}}},
			[]string{`collection "posts"`, "omit_columns"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(&tc.cfg, "admin")
			if err == nil {
				t.Fatal("Compile accepted the rules")
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("error %q does not say %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
	// dyn rules are accepted (checked at run time).
	if _, err := Compile(&Config{Collections: map[string]Collection{"posts": {Read: str("record.published")}}}, "admin"); err != nil {
		t.Fatalf("dyn rule refused: %v", err)
	}
}

// TestFixtures compiles every rules file under testdata/rules: bad-*.yaml
// must fail with the message in the .err file; the others must compile.
func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("../../testdata/rules/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var cfg Config
			if err := yaml.Unmarshal(data, &cfg); err != nil {
				t.Fatal(err)
			}
			_, err = Compile(&cfg, "admin")
			if !strings.HasPrefix(filepath.Base(f), "bad-") {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				return
			}
			want, rerr := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if rerr != nil {
				t.Fatal(rerr)
			}
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Fatalf("Compile error = %v\nwant it to contain %q", err, strings.TrimSpace(string(want)))
			}
		})
	}
}

func TestDenyByDefault(t *testing.T) {
	s, err := Compile(nil, "admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []*auth.Identity{nil, auth.Anon(), user("u1", "user")} {
		for _, p := range []string{"posts", "posts.1", "*"} {
			if err := s.CheckSubscribe(id, pat(t, p)); !errors.Is(err, ErrForbidden) {
				t.Fatalf("CheckSubscribe(%v, %s) = %v, want forbidden", id, p, err)
			}
		}
	}
	if err := s.CheckSubscribe(user("u1", "user"), pat(t, "*")); err == nil || !strings.Contains(err.Error(), "subscribing to * needs the admin role") {
		t.Fatalf("* error = %v", err)
	}
	if err := s.CheckSubscribe(auth.Anon(), pat(t, "posts")); err == nil || !strings.Contains(err.Error(), "deny by default") {
		t.Fatalf("posts error = %v", err)
	}
	for _, p := range []string{"posts", "*"} {
		if err := s.CheckSubscribe(admin, pat(t, p)); err != nil {
			t.Fatalf("admin %s: %v", p, err)
		}
	}
	ev := rec("create", "posts", "id", int64(1))
	if !s.Prepare(ev) {
		t.Fatal("Prepare refused a plain event")
	}
	if s.Allow(user("u1", "user"), ev) || s.Allow(nil, ev) {
		t.Fatal("non-admin allowed without rules")
	}
	if !s.Allow(admin, ev) {
		t.Fatal("admin denied")
	}
	// An empty admin role never matches an empty role claim.
	s2, _ := Compile(nil, "")
	if s2.IsAdmin(auth.Anon()) || s2.IsAdmin(user("u", "")) {
		t.Fatal("empty role is admin")
	}
}

func TestDefaultRule(t *testing.T) {
	s := compile(t, `
collections:
  posts:
    omit_columns: [secret]
  public:
    read: "true"
default:
  read: "auth.role == 'staff'"
  omit_columns: [password]
`)
	staff, usr := user("s1", "staff"), user("u1", "user")
	for _, coll := range []string{"posts", "comments", "audit:logins"} {
		if err := s.CheckSubscribe(staff, pat(t, coll+".*")); err != nil {
			t.Fatalf("staff %s: %v", coll, err)
		}
		err := s.CheckSubscribe(usr, pat(t, coll))
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "read rule for "+coll+" denies this identity: auth.role == 'staff'") {
			t.Fatalf("user %s: %v", coll, err)
		}
		ev := rec("update", coll, "id", int64(1), "secret", "s", "password", "p")
		if !s.Prepare(ev) {
			t.Fatal("Prepare refused")
		}
		if !s.Allow(staff, ev) || s.Allow(usr, ev) {
			t.Fatalf("%s: default rule not applied", coll)
		}
		if _, has := ev.Record.Get("password"); has {
			t.Fatalf("%s: default omit_columns not applied: %v", coll, ev.Record)
		}
		_, has := ev.Record.Get("secret")
		if has == (coll == "posts") {
			t.Fatalf("%s: omit_columns of posts misapplied: %v", coll, ev.Record)
		}
	}
	if err := s.CheckSubscribe(auth.Anon(), pat(t, "public")); err != nil {
		t.Fatalf("public: %v", err)
	}
}

func TestOmitColumnsAndAdminBypass(t *testing.T) {
	s := compile(t, `
collections:
  posts:
    read: "record.secret == 'ok' && auth.sub == record.user_id"
    omit_columns: [secret, notes]
  chat:
    read: "false"
    omit_columns: [ip]
`)
	ev := rec("update", "posts", "id", int64(1), "user_id", "u1", "secret", "ok", "title", "t", "notes", "n")
	ev.OldRecord = broker.Row{{Name: "id", Value: int64(1)}, {Name: "secret", Value: "old"}, {Name: "notes", Value: "n"}}
	ev.UnchangedColumns = []string{"notes", "body"}
	if !s.Prepare(ev) {
		t.Fatal("Prepare refused")
	}
	for _, row := range []broker.Row{ev.Record, ev.OldRecord} {
		for _, c := range []string{"secret", "notes"} {
			if _, has := row.Get(c); has {
				t.Fatalf("column %s not removed: %v", c, row)
			}
		}
	}
	if len(ev.Record) != 3 || len(ev.OldRecord) != 1 {
		t.Fatalf("record %v old %v", ev.Record, ev.OldRecord)
	}
	if fmt.Sprint(ev.UnchangedColumns) != "[body]" {
		t.Fatalf("unchanged_columns %v", ev.UnchangedColumns)
	}
	enc, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(enc), "secret") || strings.Contains(string(enc), `"notes"`) {
		t.Fatalf("encoded event leaks an omitted column: %s", enc)
	}
	// The rule saw the full row: secret == 'ok' held.
	if !s.Allow(user("u1", "user"), ev) {
		t.Fatal("owner denied; rule did not see the omitted column")
	}
	if s.Allow(user("u2", "user"), ev) {
		t.Fatal("non-owner allowed")
	}
	// Admin bypasses read, not omit_columns.
	if !s.Allow(admin, ev) {
		t.Fatal("admin denied")
	}
	chat := rec("create", "chat", "id", int64(1), "ip", "10.0.0.1")
	s.Prepare(chat)
	if !s.Allow(admin, chat) || s.Allow(user("u1", "user"), chat) {
		t.Fatal("admin bypass of read: false")
	}
	if _, has := chat.Record.Get("ip"); has {
		t.Fatal("omit_columns not applied for the admin's copy")
	}
	// Custom events: omitted keys removed from data.
	ce := custom("chat", `{"msg":"hi","ip":"10.0.0.2"}`)
	s.Prepare(ce)
	if strings.Contains(string(ce.Data), "ip") || !strings.Contains(string(ce.Data), `"msg":"hi"`) {
		t.Fatalf("custom data %s", ce.Data)
	}
}

func TestEventsFalse(t *testing.T) {
	s := compile(t, `
collections:
  audit:logins:
    events: false
    read: "true"
  posts:
    read: "true"
`)
	dropped := metrics.EventsDroppedByRules.WithLabelValues("events_false")
	before := counter(t, dropped)
	ev := rec("create", "audit:logins", "id", int64(1))
	if s.Prepare(ev) {
		t.Fatal("Prepare accepted an events: false event")
	}
	if counter(t, dropped) != before+1 {
		t.Fatal("events_false not counted")
	}
	for _, id := range []*auth.Identity{admin, user("u", "user"), nil} {
		err := s.CheckSubscribe(id, pat(t, "audit:logins.*"))
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "never broadcast") {
			t.Fatalf("CheckSubscribe(%v) = %v", id, err)
		}
		if s.Allow(id, ev) {
			t.Fatalf("Allow(%v) on an events: false event", id)
		}
	}
	if !s.Prepare(custom("audit:logins", `{}`)) == false {
		t.Fatal("custom event of an events: false collection prepared")
	}
	// events: false on the default applies to unlisted collections only.
	s2 := compile(t, `
collections:
  posts:
    read: "true"
default:
  events: false
`)
	if !s2.Prepare(rec("create", "posts", "id", int64(1))) || s2.Prepare(rec("create", "other", "id", int64(1))) {
		t.Fatal("default events: false misapplied")
	}
}

func TestCheckSubscribePartial(t *testing.T) {
	s := compile(t, `
collections:
  messages:
    read: "auth.sub == record.user_id"
  drafts:
    read: "auth.role == 'editor' && record.status == 'draft'"
  feed:
    read: "action == 'create' || auth.role == 'staff'"
  posts:
    read: "record.published == true"
  tenants:
    read: "auth.tenant == record.tenant && collection == 'tenants'"
  broken:
    read: "auth.level > 3"
`)
	tests := []struct {
		id      *auth.Identity
		topic   string
		allowed bool
		msg     string
	}{
		{user("u1", "user"), "messages", true, ""},
		{user("u1", "user"), "messages.42", true, ""},
		{auth.Anon(), "messages", false, "could not be evaluated for this identity"},
		{user("e1", "editor"), "drafts", true, ""},
		{user("u1", "user"), "drafts", false, "read rule for drafts denies this identity: auth.role == 'editor' && record.status == 'draft'"},
		{user("u1", "user"), "feed", true, ""}, // depends on action
		{auth.Anon(), "posts", true, ""},       // depends on record only
		{user("u1", "user", "tenant", "t1"), "tenants", true, ""},
		{user("u1", "user", "level", "high"), "broken", false, "could not be evaluated"},
		{user("u1", "user", "level", 5.0), "broken", true, ""},
		{user("u1", "user", "level", 2.0), "broken", false, "denies this identity"},
	}
	for _, tc := range tests {
		err := s.CheckSubscribe(tc.id, pat(t, tc.topic))
		if tc.allowed != (err == nil) {
			t.Fatalf("CheckSubscribe(%s, %s) = %v, want allowed=%v", tc.id.Subject, tc.topic, err, tc.allowed)
		}
		if err != nil && (!errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tc.msg)) {
			t.Fatalf("CheckSubscribe(%s, %s) = %v, want %q", tc.id.Subject, tc.topic, err, tc.msg)
		}
	}
}

func TestRuntimeErrors(t *testing.T) {
	s := compile(t, `
collections:
  items:
    read: "record.count > 1"
  msgs:
    read: "auth.sub == record.user_id || record.public == true"
`)
	ok := rec("create", "items", "id", int64(1), "count", int64(5))
	strCount := rec("create", "items", "id", int64(2), "count", "many")
	missing := rec("create", "items", "id", int64(3))
	ok2 := rec("update", "items", "id", int64(4), "count", json.Number("7"))
	subs := []*auth.Identity{user("a", "user"), user("b", "user"), auth.Anon()}
	errs := metrics.RuleErrors.WithLabelValues("items")
	dropErr := metrics.EventsDroppedByRules.WithLabelValues("rule_error")
	before, beforeDrop := counter(t, errs), counter(t, dropErr)
	for _, ev := range []*broker.Event{ok, strCount, missing, ok2} {
		if !s.Prepare(ev) {
			t.Fatal("Prepare refused")
		}
		want := ev == ok || ev == ok2
		for _, id := range subs {
			if got := s.Allow(id, ev); got != want {
				t.Fatalf("event %v to %q: allowed=%v, want %v", ev.Record, id.Subject, got, want)
			}
		}
	}
	if got := counter(t, errs) - before; got != 6 {
		t.Fatalf("rule_errors_total{collection=items} +%v, want +6 (2 events × 3 subscribers)", got)
	}
	if got := counter(t, dropErr) - beforeDrop; got != 6 {
		t.Fatalf("events_dropped_by_rules_total{reason=rule_error} +%v, want +6", got)
	}

	// Per-subscriber rule: an error for one subscriber/event leaves the others.
	errsMsgs := metrics.RuleErrors.WithLabelValues("msgs")
	before = counter(t, errsMsgs)
	own := rec("create", "msgs", "id", int64(1), "user_id", "a", "public", false)
	noOwner := rec("create", "msgs", "id", int64(2), "public", true) // auth.sub == missing → error || true → true
	noPublic := rec("create", "msgs", "id", int64(3), "user_id", "b")
	for _, ev := range []*broker.Event{own, noOwner, noPublic} {
		s.Prepare(ev)
	}
	a, b, anon := subs[0], subs[1], subs[2]
	checks := []struct {
		id   *auth.Identity
		ev   *broker.Event
		want bool
	}{
		{a, own, true}, {b, own, false}, {anon, own, false}, // anon: error || false → error
		{a, noOwner, true}, {b, noOwner, true}, {anon, noOwner, true},
		{a, noPublic, false}, // false || error → error
		{b, noPublic, true},
		{anon, noPublic, false}, // error || error
	}
	for _, c := range checks {
		if got := s.Allow(c.id, c.ev); got != c.want {
			t.Fatalf("msgs %v to %q: %v, want %v", c.ev.Record, c.id.Subject, got, c.want)
		}
	}
	if got := counter(t, errsMsgs) - before; got != 3 {
		t.Fatalf("rule_errors_total{collection=msgs} +%v, want +3", got)
	}
}

func TestCustomEvents(t *testing.T) {
	s := compile(t, `
collections:
  chat:
    read: "action == 'custom' && record.room in auth.rooms"
  news:
    read: "size(record) == 0"
`)
	u := user("u1", "user", "rooms", []any{"r1", "r2"})
	ev := custom("chat", `{"room":"r2","text":"hi"}`)
	s.Prepare(ev)
	if !s.Allow(u, ev) {
		t.Fatal("custom event denied")
	}
	ev = custom("chat", `{"room":"r3"}`)
	s.Prepare(ev)
	if s.Allow(u, ev) {
		t.Fatal("custom event of another room allowed")
	}
	for _, data := range []string{``, `[1,2]`, `"x"`, `null`} {
		ev := custom("news", data)
		s.Prepare(ev)
		if !s.Allow(u, ev) {
			t.Fatalf("data %q: record is not an empty map", data)
		}
	}
}

func TestValueConversion(t *testing.T) {
	s := compile(t, `
collections:
  t:
    read: >
      record.i == 3 && record.n == 12.5 && record.big == 10 && record.j.k[1] == 'b' &&
      record.arr[0] == 1 && record.b && record.nul == null && record.s.startsWith('he') &&
      auth.level >= 2 && auth.level == 2 && auth.org.id == record.i
`)
	ev := rec("update", "t",
		"i", int64(3), "n", json.Number("12.5"), "big", json.Number("10"),
		"j", json.RawMessage(`{"k":["a","b"]}`), "arr", []any{int64(1), "x"},
		"b", true, "nul", nil, "s", "hello")
	s.Prepare(ev)
	id := user("u", "user", "level", 2.0, "org", map[string]any{"id": 3.0})
	if !s.Allow(id, ev) {
		t.Fatal("value conversion: rule false or failed")
	}
}

// TestPrepareCost proves Prepare builds only what the collection's rule
// reads: nothing per event for a rule on neither auth nor the event (it
// is evaluated once), no CEL map of the row for a rule on action alone,
// and the row for a rule on record; each still decides correctly.
func TestPrepareCost(t *testing.T) {
	s := compile(t, `
collections:
  public:
    read: "true"
  named:
    read: "collection == 'named'"
  actions:
    read: "action != 'delete'"
  rows:
    read: "record.v > 1"
`)
	anon := auth.Anon()
	cases := []struct {
		coll, action string
		v            int64
		allow        bool
		record       bool
		allocs       float64 // per Prepare, at most
	}{
		{"public", "create", 1, true, false, 0},
		{"named", "create", 1, true, false, 0},
		{"actions", "create", 1, true, false, 1},
		{"actions", "delete", 1, false, false, 1},
		{"rows", "create", 1, false, true, 100},
		{"rows", "create", 2, true, true, 100},
	}
	for _, c := range cases {
		ev := rec(c.action, c.coll, "id", int64(1), "v", c.v)
		if !s.Prepare(ev) {
			t.Fatalf("%s %s: Prepare dropped the event", c.coll, c.action)
		}
		st := ev.Meta.(*eventState)
		if got := s.Allow(anon, ev); got != c.allow {
			t.Errorf("%s %s v=%d: Allow = %v, want %v", c.coll, c.action, c.v, got, c.allow)
		}
		if (st.record != nil) != c.record {
			t.Errorf("%s %s: CEL row built = %v, want %v", c.coll, c.action, st.record != nil, c.record)
		}
		evs := make([]*broker.Event, 51) // AllocsPerRun runs once more to warm up
		for i := range evs {
			evs[i] = rec(c.action, c.coll, "id", int64(1), "v", c.v)
		}
		n := 0
		allocs := testing.AllocsPerRun(50, func() {
			s.Prepare(evs[n])
			n++
		})
		if allocs > c.allocs {
			t.Errorf("%s %s: Prepare allocates %v times per event, want at most %v", c.coll, c.action, allocs, c.allocs)
		}
	}
}

// TestNoPerSubscriberEvaluation proves (a) and (b) rules do not evaluate CEL
// per subscriber and do not allocate, and (c) evaluates once per subscriber.
func TestNoPerSubscriberEvaluation(t *testing.T) {
	s := compile(t, `
collections:
  a:
    read: "true"
  b:
    read: "auth.role == 'user'"
  c:
    read: "auth.sub == record.user_id"
`)
	ids := make([]*auth.Identity, 100)
	for i := range ids {
		ids[i] = user(fmt.Sprintf("u%d", i), "user")
	}
	for _, coll := range []string{"a", "b", "c"} {
		for _, id := range ids {
			if err := s.CheckSubscribe(id, pat(t, coll)); err != nil {
				t.Fatal(err)
			}
		}
		for round := 0; round < 3; round++ {
			ev := rec("create", coll, "id", int64(round), "user_id", "u7")
			start := s.Evaluations()
			s.Prepare(ev)
			prepared := s.Evaluations() - start
			allowed := 0
			for _, id := range ids {
				if s.Allow(id, ev) {
					allowed++
				}
			}
			perSub := s.Evaluations() - start - prepared
			switch coll {
			case "a":
				// Evaluated once for the collection, on its first event.
				if prepared != map[bool]uint64{true: 1, false: 0}[round == 0] || perSub != 0 || allowed != 100 {
					t.Fatalf("a: prepare evals %d, per-subscriber evals %d, allowed %d", prepared, perSub, allowed)
				}
			case "b":
				if prepared != 0 || perSub != 0 || allowed != 100 {
					t.Fatalf("b: prepare evals %d, per-subscriber evals %d, allowed %d", prepared, perSub, allowed)
				}
			case "c":
				if prepared != 0 || perSub != 100 || allowed != 1 {
					t.Fatalf("c: prepare evals %d, per-subscriber evals %d, allowed %d", prepared, perSub, allowed)
				}
			}
			if coll != "c" {
				allocs := testing.AllocsPerRun(100, func() {
					for _, id := range ids[:10] {
						s.Allow(id, ev)
					}
				})
				if allocs != 0 {
					t.Fatalf("%s: Allow allocates (%v per 10 calls)", coll, allocs)
				}
			}
		}
	}
}

func TestIdentityChange(t *testing.T) {
	s := compile(t, `
collections:
  b:
    read: "auth.role == 'user'"
`)
	ev := rec("create", "b", "id", int64(1))
	s.Prepare(ev)
	u := user("u1", "user")
	if !s.Allow(u, ev) {
		t.Fatal("user denied")
	}
	// A new token → a new Identity → a fresh verdict.
	g := user("u1", "guest")
	if s.Allow(g, ev) {
		t.Fatal("downgraded identity still allowed (stale cache)")
	}
	if err := s.CheckSubscribe(g, pat(t, "b")); !errors.Is(err, ErrForbidden) {
		t.Fatalf("downgraded identity may subscribe: %v", err)
	}
	// Two Sets (reloaded rules) do not share cached verdicts.
	s2 := compile(t, `
collections:
  b:
    read: "auth.role == 'guest'"
`)
	ev2 := rec("create", "b", "id", int64(1))
	s2.Prepare(ev2)
	if s2.Allow(u, ev2) || !s2.Allow(g, ev2) {
		t.Fatal("verdicts shared across rule sets")
	}
}

func TestUnprepared(t *testing.T) {
	s := compile(t, `
collections:
  posts:
    read: "true"
    omit_columns: [secret]
  open:
    read: "auth.sub == record.owner"
`)
	if s.Allow(admin, rec("create", "posts", "id", int64(1), "secret", "x")) {
		t.Fatal("unprepared event of a collection with omit_columns delivered")
	}
	ev := rec("create", "open", "owner", "u1")
	if !s.Allow(user("u1", ""), ev) || s.Allow(user("u2", ""), ev) {
		t.Fatal("unprepared event judged wrongly")
	}
	// Prepare twice is harmless.
	ev = rec("create", "posts", "id", int64(1), "secret", "x")
	first, second := s.Prepare(ev), s.Prepare(ev)
	if !first || !second || !s.Allow(nil, ev) {
		t.Fatal("double Prepare")
	}
}

func TestConcurrentAllow(t *testing.T) {
	s := compile(t, `
collections:
  b:
    read: "auth.role == 'user'"
  c:
    read: "auth.sub == record.user_id"
`)
	ids := make([]*auth.Identity, 50)
	for i := range ids {
		ids[i] = user(fmt.Sprintf("u%d", i), "user")
	}
	evs := []*broker.Event{rec("create", "b", "user_id", "u1"), rec("create", "c", "user_id", "u1")}
	for _, ev := range evs {
		s.Prepare(ev)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			for round := 0; round < 20; round++ {
				for _, ev := range evs {
					for _, id := range ids {
						if s.Allow(id, ev) {
							local[ev.Collection]++
						}
					}
				}
			}
			mu.Lock()
			for k, v := range local {
				counts[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts["b"] != 4*20*50 || counts["c"] != 4*20 {
		t.Fatalf("counts %v", counts)
	}
}

func TestDefaultRuleOnCollection(t *testing.T) {
	s := compile(t, `
collections:
  listed:
    omit_columns: [x]
default:
  read: "collection in auth.colls"
`)
	u := user("u1", "user", "colls", []any{"pub", "listed"})
	for coll, want := range map[string]bool{"pub": true, "listed": true, "other": false} {
		if err := s.CheckSubscribe(u, pat(t, coll)); (err == nil) != want {
			t.Fatalf("CheckSubscribe %s: %v", coll, err)
		}
		for i := 0; i < 2; i++ { // second round: cached verdict per (identity, collection)
			ev := rec("create", coll, "id", int64(i))
			s.Prepare(ev)
			if got := s.Allow(u, ev); got != want {
				t.Fatalf("Allow %s: %v, want %v", coll, got, want)
			}
		}
	}
}

func TestRuleErrorLogRateLimited(t *testing.T) {
	s := compile(t, `
collections:
  items:
    read: "record.count > 1"
`)
	var buf strings.Builder
	var mu sync.Mutex
	s.Log = zerolog.New(zerolog.SyncWriter(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.WriteString(string(p))
	})))
	for i := 0; i < 50; i++ {
		ev := rec("create", "items", "id", int64(i), "count", "NaN")
		s.Prepare(ev)
		if s.Allow(user("u", "user"), ev) {
			t.Fatal("allowed on error")
		}
	}
	mu.Lock()
	lines := strings.Count(buf.String(), "\n")
	out := buf.String()
	mu.Unlock()
	if lines != 1 || !strings.Contains(out, `"collection":"items"`) || !strings.Contains(out, "no such overload") {
		t.Fatalf("want one log line naming the collection and the error, got %d:\n%s", lines, out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
