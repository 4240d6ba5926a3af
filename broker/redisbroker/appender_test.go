package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// TestDurableWaitsForRedis: while Redis does not answer, Durable never
// reports a position past the transaction it has not confirmed; once Redis
// answers it moves to safe.
func TestDurableWaitsForRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	n := startNode(t, srv, 100)
	r := newReader(n.b, 900)
	r.publish(t, tx(1000, 1))
	srv.Pause()
	t2 := tx(1100, 2)
	if err := n.b.Append(context.Background(), t2); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the batch is in flight", func() (bool, string) {
		n.b.app.mu.Lock()
		defer n.b.app.mu.Unlock()
		return len(n.b.app.s.inflight) > 0, "queued"
	})
	// Absence can only be watched for a while: 50 calls over ~250 ms.
	for range 50 {
		d, err := n.b.Durable(t2.EndLSN)
		if err != nil {
			t.Fatal(err)
		}
		if d > t2.CommitLSN {
			srv.Resume()
			t.Fatalf("Durable = %X while the transaction at %X is unconfirmed", d, t2.CommitLSN)
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv.Resume()
	waitUntil(t, "Durable reaches the end of the transaction", func() (bool, string) {
		d, err := n.b.Durable(t2.EndLSN)
		return err == nil && d == t2.EndLSN, "not yet"
	})
	n.rec.waitPos(t, t2.Events[1].Position)
}

// TestReBeginCompletesAHalfAppendedTransaction: a leader died after
// appending part of a transaction; the next session (Begin reads L) appends
// the rest, with p continuing the chain: one transaction, no duplicate, no
// reset.
func TestReBeginCompletesAHalfAppendedTransaction(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv, 100)
	w := newClient(t, srv)
	t0, t1, t2 := tx(800, 1), tx(1000, 3), tx(1100, 1)
	r := newReader(n.b, 700)
	r.publish(t, t0)
	// The dead leader's half batch (it never acknowledged past t0).
	xadd(t, w, t1.Events[0], 3, t0.Events[0].Position)
	xadd(t, w, t1.Events[1], 3, t1.Events[0].Position)
	r2 := newReader(n.b, r.acked) // a new session: Begin again
	r2.publish(t, t1, t2)
	want := txPositions(t0, t1, t2)
	n.rec.waitPos(t, want[len(want)-1])
	got, resets, implicit := n.rec.snapshot()
	if !slices.Equal(got, want) || len(resets) != 0 || len(implicit) != 0 {
		t.Fatalf("applied %v resets %v implicit %v; want %v", got, resets, implicit, want)
	}
	n.rec.mu.Lock()
	if len(n.rec.txs) != 3 || len(n.rec.txs[1]) != 3 {
		t.Errorf("Apply calls %v: want the half-appended transaction as one", n.rec.txs)
	}
	n.rec.mu.Unlock()
	entries, err := w.Do(context.Background(), w.B().Xrange().Key(n.b.keys.stream).Start("-").End("+").Build()).AsXRangeSlices()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	if want := []string{"800-1", "1000-1", "1000-2", "1000-3", "1100-1"}; !slices.Equal(ids, want) {
		t.Fatalf("stream %v, want %v", ids, want)
	}
}

// TestRefusedAppendIsThereAlready: a second appender whose session began
// before the first appended (a zombie) has its old ids refused by Redis;
// it re-reads the stream's last id, finds them there, and goes on after
// them without an error and without breaking the chain.
//
// Both nodes' XREAD BLOCK is a minute: the zombie, which was applying its
// own transactions without reading the stream, must read it at once for
// the ones Redis refused (another node appended them), and the first
// leader, once it stopped appending, the zombie's.
func TestRefusedAppendIsThereAlready(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	slow := func(_ *Config, br *Broker) { br.readBlock = time.Minute }
	a, b := startNode(t, srv, 100, slow), startNode(t, srv, 100, slow)
	t0, t1, t2, t3 := tx(950, 1), tx(1000, 2), tx(1100, 1), tx(1200, 1)
	rb := newReader(b.b, 900)
	rb.publish(t, t0)
	b.rec.waitPos(t, t0.Events[0].Position)
	newReader(a.b, rb.acked).publish(t, t1, t2)
	deadline := time.Now().Add(10 * time.Second)
	rb.publish(t, t1) // refused: appended already
	b.rec.waitPos(t, t2.Events[0].Position)
	a.b.End()
	rb.publish(t, t3)
	if len(rb.log) != 0 {
		t.Fatalf("zombie appender errors: %q", rb.log)
	}
	want := txPositions(t0, t1, t2, t3)
	for _, n := range []*node{a, b} {
		n.rec.waitPos(t, want[len(want)-1])
		got, resets, implicit := n.rec.snapshot()
		if !slices.Equal(got, want) || len(resets) != 0 || len(implicit) != 0 {
			t.Fatalf("applied %v resets %v implicit %v; want %v", got, resets, implicit, want)
		}
	}
	if time.Now().After(deadline) {
		t.Fatal("a node waited out its XREAD BLOCK time for entries it did not append")
	}
}

// TestAppendBlocksWhenTheQueueIsFull: beyond the queue's bound Append
// waits, until its ctx ends; it goes on once Redis confirms.
func TestAppendBlocksWhenTheQueueIsFull(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv, 100, func(_ *Config, b *Broker) { b.queueLimit = 1 })
	r := newReader(n.b, 900)
	r.publish(t, tx(1000, 1))
	srv.Pause()
	t2, t3 := tx(1100, 1), tx(1200, 1)
	if err := n.b.Append(context.Background(), t2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := n.b.Append(ctx, t3)
	cancel()
	srv.Resume()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append beyond the bound = %v, want the ctx's deadline", err)
	}
	r.publish(t, t2, t3)
	n.rec.waitPos(t, t3.Events[0].Position)
}

// TestBeginRefusesAForeignStream: another format or another origin is
// refused with what to do; no Origin configured means no origin check.
func TestBeginRefusesAForeignStream(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	from := broker.Position{LSN: 900}
	a := startNode(t, srv, 100, func(c *Config, _ *Broker) { c.Origin = "7000000000000000001/1/app" })
	if err := a.b.Begin(ctx, from); err != nil {
		t.Fatal(err)
	}
	other := startNode(t, srv, 100, func(c *Config, _ *Broker) { c.Origin = "7000000000000000002/1/app" })
	err := other.b.Begin(ctx, from)
	if !errors.Is(err, ErrOrigin) {
		t.Fatalf("Begin with another origin = %v, want ErrOrigin", err)
	}
	t.Log(err)
	if err := startNode(t, srv, 100).b.Begin(ctx, from); err != nil {
		t.Fatalf("Begin without an origin: %v", err)
	}
	w := newClient(t, srv)
	if err := w.Do(ctx, w.B().Set().Key(a.b.keys.format).Value("1").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := a.b.Begin(ctx, from); !errors.Is(err, ErrFormat) {
		t.Fatalf("Begin on format 1 = %v, want ErrFormat", err)
	}
	if err := a.b.Append(ctx, tx(1000, 1)); !errors.Is(err, errNoSession) {
		t.Fatalf("Append after a refused Begin = %v, want errNoSession", err)
	}
}

// evalshaCalls is the server's count of EVALSHA commands (the watermark
// script).
func evalshaCalls(t *testing.T, n *node) int {
	t.Helper()
	info, err := n.c.Do(context.Background(), n.c.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
			c, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return c
		}
	}
	return 0
}

// TestIdleWatermarkAdvances: with nothing to append, Durable still raises
// the flushed watermark to safe (so the slot moves), in a watermark-only
// batch at most once a second; the watermark never goes down.
func TestIdleWatermarkAdvances(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv, 100, func(_ *Config, b *Broker) { b.idleEvery = idleWatermarkEvery })
	ctx := context.Background()
	if err := n.b.Begin(ctx, broker.Position{LSN: 900}); err != nil {
		t.Fatal(err)
	}
	flushed := func() string {
		v, _ := n.c.Do(ctx, n.c.B().Get().Key(n.b.keys.flushed).Build()).ToString()
		return v
	}
	start, calls0 := time.Now(), evalshaCalls(t, n)
	safe := uint64(2000)
	waitUntil(t, "Durable reaches safe", func() (bool, string) {
		safe++
		d, err := n.b.Durable(safe)
		return err == nil && d >= 2000, fmt.Sprintf("Durable = %X, %v", d, err)
	})
	for i := range 100 { // more calls within the second: no more batches
		if _, err := n.b.Durable(safe + 1000 + uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	if w := flushed(); w < watermarkText(2000) {
		t.Fatalf("flushed watermark %q, want at least %s", w, watermarkText(2000))
	}
	if got, limit := evalshaCalls(t, n)-calls0, 1+int(elapsed/idleWatermarkEvery); got > limit {
		t.Fatalf("%d watermark batches in %s, want at most %d", got, elapsed, limit)
	}
	// The script only raises it.
	if err := n.c.Do(ctx, n.c.B().Eval().Script(raiseWatermark).Numkeys(1).Key(n.b.keys.flushed).Arg(watermarkText(5)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if w := flushed(); w < watermarkText(2000) {
		t.Fatalf("flushed watermark lowered to %q", w)
	}
}

// TestCloseDoesNotWaitForAStalledRedis: ending a session whose batch is
// stuck on an unresponsive Redis returns at once.
func TestCloseDoesNotWaitForAStalledRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv, 100)
	r := newReader(n.b, 900)
	r.publish(t, tx(1000, 1))
	srv.Pause()
	defer srv.Resume()
	if err := n.b.Append(context.Background(), tx(1100, 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the batch is in flight", func() (bool, string) {
		n.b.app.mu.Lock()
		defer n.b.app.mu.Unlock()
		return len(n.b.app.s.inflight) > 0, "queued"
	})
	start := time.Now()
	if err := n.b.Close(); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("Close took %s", d)
	if d > 2*time.Second {
		t.Fatalf("Close took %s with Redis paused", d)
	}
	if _, err := n.b.Durable(2000); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Durable after Close = %v, want broker.ErrClosed", err)
	}
}
