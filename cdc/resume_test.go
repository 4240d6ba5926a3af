package cdc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/broker/brokertest"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

func recIDs(evs []*broker.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Collection+"/"+e.Action+"/"+e.RecordID)
	}
	return fmt.Sprint(s)
}

// A client whose last event is not the last one published (it watches
// posts; comments were written after) resumes after a restart of
// pgrealtime, graceful or not, with every event it missed and nothing
// twice; a client that subscribes afresh after the restart does not get the
// events the earlier run delivered.
func TestResumeWindowSurvivesRestart(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "graceful", true: "crash"}[crash], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			url := pgtest.NewDB(t)
			conn := connect(t, ctx, url)
			mustExec(t, ctx, conn, `CREATE TABLE posts (id int PRIMARY KEY); CREATE TABLE comments (id int PRIMARY KEY)`)
			slot := randomName("slot_")
			b1 := broker.NewMemory(broker.Config{HistorySize: 100})
			rr := startReader(t, url, b1, func(c *Config) { c.Slot = slot })
			rr.waitReady(t, ctx)
			posts := brokertest.NewRecorder()
			if _, err := b1.Subscribe(ctx, posts, []broker.Pattern{{Collection: "posts"}}, nil); err != nil {
				t.Fatal(err)
			}
			mustExec(t, ctx, conn, `INSERT INTO posts VALUES (1)`)
			mustExec(t, ctx, conn, `INSERT INTO comments VALUES (1)`)
			mustExec(t, ctx, conn, `INSERT INTO comments VALUES (2)`)
			seen := posts.WaitN(t, 1)[0].Position
			waitFor(t, ctx, "the last transaction in the checkpoint", func() bool {
				_, ckpt := slotState(t, ctx, conn, slot)
				var delivered *string
				_ = conn.QueryRow(ctx, `SELECT delivered FROM pgrealtime.checkpoint WHERE slot = $1`, slot).Scan(&delivered)
				return !ckpt.IsZero() && delivered != nil && *delivered == b1.Position().String()
			})
			if crash {
				rr.r.stopAbruptly()
			}
			rr.shutdown(t)

			mustExec(t, ctx, conn, `INSERT INTO comments VALUES (3)`)
			mustExec(t, ctx, conn, `INSERT INTO posts VALUES (2)`)

			b2 := broker.NewMemory(broker.Config{HistorySize: 100})
			fresh := brokertest.NewRecorder()
			// Subscribed before the reader starts: posts 2, committed while
			// pgrealtime was down, is live for it however fast the catch-up.
			if _, err := b2.Subscribe(ctx, fresh, []broker.Pattern{{Collection: "posts"}}, nil); err != nil {
				t.Fatal(err)
			}
			rr2 := startReader(t, url, b2, func(c *Config) { c.Slot = slot })
			rr2.waitReady(t, ctx)
			resumed := brokertest.NewRecorder()
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			if _, err := b2.Subscribe(sctx, resumed, []broker.Pattern{{Collection: "posts"}}, &seen); err != nil {
				t.Fatalf("resume from %s after restart: %v", seen, err)
			}
			if got := recIDs(resumed.WaitN(t, 1)); got != "[posts/create/2]" {
				t.Fatalf("resumed client got %s, want [posts/create/2]", got)
			}
			mustExec(t, ctx, conn, `INSERT INTO posts VALUES (3)`)
			resumed.WaitN(t, 2)
			fresh.WaitN(t, 2)
			brokertest.Barrier(t, b2, fresh, resumed) // anything extra would be here by now
			if got := recIDs(fresh.Events()); got != "[posts/create/2 posts/create/3]" {
				t.Fatalf("fresh client got %s, want [posts/create/2 posts/create/3]", got)
			}
			if got := recIDs(resumed.Events()); got != "[posts/create/2 posts/create/3]" {
				t.Fatalf("resumed client got %s", got)
			}
		})
	}
}

// While the published tables are idle and other WAL piles up, the slot is
// held at the resume window only up to ResumeWALLimit; past it, it advances.
func TestResumeWindowIsBoundedByWALLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE posts (id int PRIMARY KEY)`)
	slot := randomName("slot_")
	b := broker.NewMemory(broker.Config{HistorySize: 100})
	rr := startReader(t, url, b, func(c *Config) { c.Slot = slot; c.ResumeWALLimit = 256 << 10 })
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `CREATE TABLE pgrealtime.filler (x text)`) // pgrealtime's schema is never published
	mustExec(t, ctx, conn, `INSERT INTO posts VALUES (1)`)
	first := broker.Position{}
	waitFor(t, ctx, "the row", func() bool { _, f := b.Retained(); first = f; return !f.IsZero() })
	// Held: the window's transaction is not acknowledged.
	time.Sleep(500 * time.Millisecond)
	if confirmed, _ := slotState(t, ctx, conn, slot); confirmed > first.LSN {
		t.Fatalf("slot confirmed %X past the resume window's first transaction %X", confirmed, first.LSN)
	}
	// 1 MB of WAL on a table that is not published.
	mustExec(t, ctx, conn, `INSERT INTO pgrealtime.filler SELECT repeat('x', 1000) FROM generate_series(1, 1000)`)
	waitFor(t, ctx, "the slot to advance past the window", func() bool {
		confirmed, _ := slotState(t, ctx, conn, slot)
		return confirmed > first.LSN
	})
}
