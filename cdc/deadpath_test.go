package cdc

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// TestReplAppName: the run id always survives Postgres's 63-byte cut of
// application_name, whatever name the user configured.
func TestReplAppName(t *testing.T) {
	id := newRunID()
	if len(id) != 12 || id == newRunID() {
		t.Fatalf("run id %q: want 12 hex characters, different each time", id)
	}
	for _, c := range []struct{ base, want string }{
		{"", "pgrealtime/" + id},
		{"orders-feed", "orders-feed/" + id},
		{"café\tfeed", "caf___feed/" + id},
		{strings.Repeat("x", 80), strings.Repeat("x", 50) + "/" + id},
	} {
		got := replAppName(c.base, id)
		if got != c.want || len(got) > maxAppName {
			t.Errorf("replAppName(%q) = %q (%d bytes), want %q", c.base, got, len(got), c.want)
		}
	}
}

// TestBusyWalsenderIsNotADeadPath: a walsender silent because it is
// decoding a large transaction whose changes are all filtered out (an
// UPDATE of a table published for inserts only) is waited for, not taken
// for a dead path: with a ServerTimeout far shorter than the decoding, the
// reader keeps its connection (no reconnection, which would decode the
// transaction again, and again) and the next row arrives.
func TestBusyWalsenderIsNotADeadPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE filler (x int)`) // no key: insert-only
	mustExec(t, ctx, conn, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)
	mustExec(t, ctx, conn, `INSERT INTO filler SELECT g FROM generate_series(1, 1000000) g`)
	sink := newRecSink()
	var buf lockedLog
	rr := startReader(t, url, sink, func(c *Config) {
		c.StatusInterval = 50 * time.Millisecond
		c.ServerTimeout = 250 * time.Millisecond
		c.DisableNotify = true
		c.Logger = zerolog.New(&buf).Level(zerolog.DebugLevel)
	})
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `UPDATE filler SET x = x + 1`)
	mustExec(t, ctx, conn, `INSERT INTO posts (title) VALUES ('after')`)
	waitFor(t, ctx, "the row after the large transaction", func() bool {
		if logs := buf.String(); strings.Contains(logs, "replication stream disconnected") {
			t.Fatalf("reconnected while the walsender was busy:\n%s", tailString(logs, 3000))
		}
		return len(sink.events()) > 0
	})
	if evs := sink.events(); evs[0].Collection != "posts" {
		t.Fatalf("event %+v", evs[0])
	}
	if logs := buf.String(); strings.Contains(logs, "replication stream disconnected") {
		t.Fatalf("reconnected while the walsender was busy:\n%s", tailString(logs, 3000))
	}
	if !strings.Contains(buf.String(), "walsender busy") {
		t.Logf("the walsender never looked busy (decoding was quicker than ServerTimeout): the test proved little")
	}
}

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
