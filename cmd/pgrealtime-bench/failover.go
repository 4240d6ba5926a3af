package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// failoverResult is one SIGKILL of the leader under a steady writer, seen
// by a subscriber on the follower.
type failoverResult struct {
	Rate    int    `json:"rows_per_s"`
	Killed  string `json:"killed"`
	Written int64  `json:"written"`
	// FirstAfter is the time from the SIGKILL to the subscriber's receipt
	// of the first row whose insert began after it.
	FirstAfter float64 `json:"first_after_s"`
	Received   int     `json:"received"`
	Lost       int64   `json:"lost"`
	Duplicated int     `json:"duplicated"`
	Reconnects int     `json:"reconnects"` // the subscriber's, resuming with since
}

// failoverSub is the follower's subscriber: it counts each row (by v, the
// writer's sequence) and reconnects with since when its socket drops.
type failoverSub struct {
	mu         sync.Mutex
	seen       map[int64]int
	firstAt    map[int64]time.Time
	last       string // position of the last event
	reconnects int
	err        error
}

func (f *failoverSub) run(ctx context.Context, e *benchEnv, s *server, ready chan<- error) {
	for first := true; ctx.Err() == nil; first = false {
		f.mu.Lock()
		since := f.last
		f.mu.Unlock()
		cl, err := dialClient(ctx, s.URL(), e.token)
		if err == nil {
			_, err = cl.subscribe(ctx, []string{"bench.*"}, since, f.event)
		}
		if first {
			ready <- err
			if err != nil {
				return
			}
		}
		for err == nil {
			var msg []byte
			if msg, err = cl.next(ctx); err == nil && string(jsonField(msg, "type")) == "record_event" {
				f.event(msg, time.Now())
			}
		}
		if cl != nil {
			cl.close()
		}
		if ctx.Err() != nil || s.exited() {
			f.mu.Lock()
			if ctx.Err() == nil {
				f.err = fmt.Errorf("the follower exited: %s", s.logTail())
			}
			f.mu.Unlock()
			return
		}
		f.mu.Lock()
		f.reconnects++
		f.mu.Unlock()
		time.Sleep(50 * time.Millisecond) // reconnect backoff
	}
}

func (f *failoverSub) event(msg []byte, at time.Time) {
	var ev struct {
		Position string `json:"position"`
		Record   struct {
			V int64 `json:"v"`
		} `json:"record"`
	}
	if json.Unmarshal(msg, &ev) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[ev.Record.V]++
	if _, ok := f.firstAt[ev.Record.V]; !ok {
		f.firstAt[ev.Record.V] = at
	}
	f.last = ev.Position
}

// firstFrom is the earliest receipt of a row with v ≥ from.
func (f *failoverSub) firstFrom(from int64) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var first time.Time
	for v, at := range f.firstAt {
		if v >= from && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, !first.IsZero()
}

func (f *failoverSub) has(v int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[v] > 0
}

// failover kills the leader while a writer commits rows v = 1, 2, … at
// failoverRate and a subscriber on the follower counts them.
func (e *benchEnv) failover(ctx context.Context, c *benchCluster) (*failoverResult, error) {
	lead, err := c.leader(ctx, 20*time.Second)
	if err != nil {
		return nil, err
	}
	r := &failoverResult{Rate: failoverRate, Killed: c.id(lead)}
	fol := c.nodes[1-lead]
	sctx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	sub := &failoverSub{seen: map[int64]int{}, firstAt: map[int64]time.Time{}}
	ready := make(chan error, 1)
	go sub.run(sctx, e, fol, ready)
	if err := <-ready; err != nil {
		return r, fmt.Errorf("subscriber on the follower: %w", err)
	}

	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.Background())
	// The writer stops between inserts (never cancelling one), so that
	// begun is exactly the rows committed once it has stopped.
	var begun atomic.Int64
	var stopping atomic.Bool
	werr := make(chan error, 1)
	go func() {
		interval := time.Second / failoverRate
		start := time.Now()
		for v := int64(1); ; v++ {
			select {
			case <-ctx.Done():
				werr <- ctx.Err()
				return
			case <-time.After(time.Until(start.Add(time.Duration(v-1) * interval))):
			}
			if stopping.Load() {
				werr <- nil
				return
			}
			begun.Store(v)
			if _, err := conn.Exec(ctx, insertSQL, v); err != nil {
				werr <- err
				return
			}
		}
	}()
	stopWriter := func() error { stopping.Store(true); return <-werr }
	defer func() {
		if !stopping.Load() {
			_ = stopWriter()
		}
	}()
	// Warm: a second of rows reaches the follower, then the kill.
	if err := waitFor(ctx, 30*time.Second, func() bool { return sub.has(failoverRate) }); err != nil {
		return r, fmt.Errorf("the follower's subscriber did not get the first second of rows: %w", err)
	}
	from := begun.Load() + 1
	killedAt := time.Now()
	leader := c.nodes[lead]
	_ = leader.cmd.Process.Kill()
	<-leader.done
	if err := waitFor(ctx, failoverBound+20*time.Second, func() bool { _, ok := sub.firstFrom(from); return ok }); err != nil {
		return r, fmt.Errorf("no row written after the SIGKILL reached the follower within %s", failoverBound+20*time.Second)
	}
	at, _ := sub.firstFrom(from)
	r.FirstAfter = at.Sub(killedAt).Seconds()
	e.logf("   SIGKILL of %s → first row written after it at the follower's subscriber: %.2f s", r.Killed, r.FirstAfter)
	// Another second of rows after the takeover, then every row must come.
	afterTakeover := begun.Load() + failoverRate
	if err := waitFor(ctx, 30*time.Second, func() bool { return begun.Load() >= afterTakeover }); err != nil {
		return r, fmt.Errorf("the writer stalled: %w", err)
	}
	if err := stopWriter(); err != nil {
		return r, fmt.Errorf("writer: %w", err)
	}
	r.Written = begun.Load()
	_ = waitFor(ctx, 30*time.Second, func() bool { return sub.has(r.Written) })
	stopSub()
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for v := int64(1); v <= r.Written; v++ {
		n := sub.seen[v]
		if n == 0 {
			r.Lost++
		}
		if n > 1 {
			r.Duplicated += n - 1
		}
		r.Received += n
	}
	r.Reconnects = sub.reconnects
	e.logf("   %d rows written, %d received: %d lost, %d duplicated; the subscriber reconnected %d times", r.Written, r.Received, r.Lost, r.Duplicated, r.Reconnects)
	if sub.err != nil {
		return r, sub.err
	}
	return r, nil
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
