package cdc

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// countWriter counts log lines containing a text.
type countWriter struct {
	text string
	n    atomic.Int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.text) {
		w.n.Add(1)
	}
	return len(p), nil
}

// TestSlotBusyRetryIsFixed: with SlotBusyRetry, a reader that finds its
// slot held by another walsender retries at that fixed interval (not with
// a growing backoff), so it streams promptly once the holder ends, however
// long the holder held it (docs/cluster.md section 8: a new leader
// waiting for the old leader's walsender).
func TestSlotBusyRetryIsFixed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	slot := randomName("slot_")
	// A first run creates the publication and the slot.
	first := startReader(t, url, newRecSink(), func(c *Config) { c.Slot = slot })
	first.waitReady(t, ctx)
	first.shutdown(t)

	// Another process holds the slot.
	pcfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	holder, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	if err := pglogrepl.StartReplication(ctx, holder, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + DefaultPublication + "'"},
	}); err != nil {
		t.Fatal(err)
	}

	retries := &countWriter{text: "reconnecting"}
	rr := startReader(t, url, newRecSink(), func(c *Config) {
		c.Slot = slot
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(retries, zerolog.NewTestWriter(t))).Level(zerolog.InfoLevel)
		// The backoff alone would wait 2.5–5 s between the later retries.
		c.MinBackoff, c.MaxBackoff = 100*time.Millisecond, 5*time.Second
		c.SlotBusyRetry = 200 * time.Millisecond
	})
	// Long enough a wait that a doubling backoff would be at its maximum.
	waitFor(t, ctx, "eight retries on the busy slot", func() bool { return retries.n.Load() >= 8 })
	if ok, _ := rr.r.Ready(); ok {
		t.Fatal("the reader streams while another walsender holds its slot")
	}
	released := time.Now()
	holder.Close(ctx)
	rr.waitReady(t, ctx)
	if d := time.Since(released); d > 1500*time.Millisecond {
		t.Fatalf("the reader streamed %s after the slot was released, want within 1.5 s (retries every 200 ms)", d)
	}
}
