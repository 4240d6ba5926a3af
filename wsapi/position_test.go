package wsapi

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

var startPosition = regexp.MustCompile(`^[0-9A-F]+/[0-9A-F]+:0$`)

// PROTOCOL section 3: position in subscribed is always present; before the
// first event it is the stream's start, <LSN>:0, and a valid since. The
// first client subscribes before the WAL reader has even started (a fresh
// server), through the real reader and Postgres.
func TestSubscribedPositionBeforeFirstEvent(t *testing.T) {
	url := pgtest.NewDB(t)
	e := newEnv(t, envOpts{noBase: true})
	db, err := pgx.Connect(e.ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	if _, err := db.Exec(e.ctx, `CREATE TABLE posts (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	tok := adminToken(t)
	first := e.dial(tok)
	first.send(msg{"type": "subscribe", "id": "s1", "topics": []string{"posts"}})
	startPGReader(e, url)
	r := first.read()
	start := r.str("position")
	if r.str("type") != "subscribed" || r.str("id") != "s1" || !startPosition.MatchString(start) {
		t.Fatalf("subscribe before the first event: got %v, want subscribed with position <LSN>:0", r)
	}
	// Subscribing again once the stream runs gives the same start.
	if got := e.dial(tok).sub("posts").str("position"); got != start {
		t.Fatalf("second subscribe before the first event: position %q, want %q", got, start)
	}

	if _, err := db.Exec(e.ctx, `INSERT INTO posts VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	live := first.read()
	pos, err := broker.ParsePosition(live.str("position"))
	startPos, _ := broker.ParsePosition(start)
	if err != nil || live.str("type") != "record_event" || live.str("record_id") != "1" || !startPos.Less(pos) {
		t.Fatalf("live event %v, want the insert after %s", live, start)
	}

	// A new connection resuming from the start position gets the insert.
	second := e.dial(tok)
	reply, before := second.request(msg{"type": "subscribe", "topics": []string{"posts"}, "since": start})
	if reply.str("type") != "subscribed" || len(before) != 0 {
		t.Fatalf("subscribe since %s: got %v (after %v)", start, reply, before)
	}
	if replay := second.sync(); len(replay) != 1 || replay[0].str("record_id") != "1" || replay[0].str("position") != live.str("position") {
		t.Fatalf("replay since %s: %v, want the insert at %s", start, replay, live.str("position"))
	}
}

// When the stream does not start within the wait (Postgres unreachable),
// there is no valid position to give: the subscribe is refused with a
// reason, nothing is subscribed, and it succeeds once the stream starts.
func TestSubscribeBeforeStreamStarts(t *testing.T) {
	e := newEnv(t, envOpts{noBase: true, since: 200 * time.Millisecond})
	c := e.dial(adminToken(t))
	r := c.expectError(msg{"type": "subscribe", "topics": []string{"posts"}}, CodeHistoryUnavailable)
	if !strings.Contains(r.str("message"), "the WAL stream has not started") {
		t.Errorf("error message %q does not say why", r.str("message"))
	}
	e.broker.SetBase(broker.Position{LSN: e.lsn.Load()}) // the reader connects
	if got := c.sub("posts").str("position"); got != "0/1000000:0" {
		t.Fatalf("position %q, want 0/1000000:0", got)
	}
	evs := e.publish(rec("posts", broker.ActionCreate, "1"))
	if m := c.read(); m.str("record_id") != "1" || m.str("position") != evs[0].Position.String() {
		t.Fatalf("got %v, want the event at %s", m, evs[0].Position)
	}
}
