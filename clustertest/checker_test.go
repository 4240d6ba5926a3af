package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/client"
)

// checker reads every client's subscription and holds the suite's
// guarantees: each client receives seq 1, 2, 3, … once each, in order; a
// missing row is accepted only right after a gap event; the position of a
// seq is the same at every client.
type checker struct {
	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every event
	logs      []*clientLog
	positions map[int64]string    // seq → position, as first seen
	firstAt   map[int64]time.Time // seq → earliest receipt at any client
	problems  []string
}

// clientLog is what one client received.
type clientLog struct {
	name       string
	last       int64 // last seq received
	first      int64 // seq it resumed after (0: from the start)
	received   int
	gaps       int   // gap events
	skipped    int64 // rows missed right after a gap event
	gapPending bool  // a gap event came, no row since
	closed     bool  // Events was closed
}

func newChecker() *checker {
	return &checker{changed: make(chan struct{}), positions: map[int64]string{}, firstAt: map[int64]time.Time{}}
}

// watch reads sub's events in a goroutine until Events is closed.
func (c *checker) watch(name string, sub *client.Subscription) { c.watchFrom(name, sub, 0) }

// watchFrom is watch for a subscription that resumes after row from: its
// first row must be from+1, unless a gap event comes first.
func (c *checker) watchFrom(name string, sub *client.Subscription, from int64) {
	c.mu.Lock()
	l := &clientLog{name: name, last: from, first: from}
	c.logs = append(c.logs, l)
	c.mu.Unlock()
	go func() {
		for ev := range sub.Events() {
			c.event(l, ev, time.Now())
		}
		c.mu.Lock()
		l.closed = true
		c.problemf("%s: its subscription ended (the client gave up)", l.name)
		c.mu.Unlock()
	}()
}

func (c *checker) event(l *clientLog, ev client.Event, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notify()
	switch {
	case ev.Type == client.TypeGap:
		l.gaps++
		l.gapPending = true
		return
	case ev.Type != client.TypeRecord || ev.Collection != "posts":
		c.problemf("%s: unexpected event %s %s %s", l.name, ev.Type, ev.Collection, ev.Event)
		return
	}
	var row struct {
		Seq int64 `json:"seq"`
	}
	if err := json.Unmarshal(ev.Record, &row); err != nil || ev.Action != "create" || row.Seq < 1 {
		c.problemf("%s: unexpected record event %s %s (%v)", l.name, ev.Action, ev.Record, err)
		return
	}
	s := row.Seq
	switch {
	case s <= l.last:
		c.problemf("%s: seq %d after seq %d (a duplicate or out of order; position %s)", l.name, s, l.last, ev.Position)
		return
	case s > l.last+1 && l.gapPending:
		l.skipped += s - l.last - 1
	case s > l.last+1:
		c.problemf("%s: SILENT GAP: seq %d after seq %d without a gap event (rows %d–%d missing; position %s)", l.name, s, l.last, l.last+1, s-1, ev.Position)
	}
	l.gapPending = false
	l.last = s
	l.received++
	if p, ok := c.positions[s]; !ok {
		c.positions[s] = ev.Position
	} else if p != ev.Position {
		c.problemf("%s: seq %d at position %s, another client had it at %s", l.name, s, ev.Position, p)
	}
	if t, ok := c.firstAt[s]; !ok || at.Before(t) {
		c.firstAt[s] = at
	}
}

// problemf records a broken guarantee (mu held); only the first 50 are kept.
func (c *checker) problemf(format string, args ...any) {
	if len(c.problems) < 50 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

func (c *checker) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// wait waits until cond (called with mu held) holds, or timeout.
func (c *checker) wait(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitAll waits until every client has received seq (or a later one).
func (c *checker) waitAll(ctx context.Context, seq int64, timeout time.Duration) error {
	err := c.wait(ctx, timeout, func() bool {
		for _, l := range c.logs {
			if l.last < seq {
				return false
			}
		}
		return true
	})
	if err == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var behind []string
	for _, l := range c.logs {
		if l.last < seq {
			behind = append(behind, fmt.Sprintf("%s at seq %d", l.name, l.last))
		}
	}
	return fmt.Errorf("not every client has seq %d within %s: %s; problems so far: %s", seq, timeout, strings.Join(behind, ", "), strings.Join(c.problems, "; "))
}

// waitFirst returns the earliest time any client received a row with seq ≥
// from.
func (c *checker) waitFirst(ctx context.Context, from int64, timeout time.Duration) (time.Time, error) {
	var first time.Time
	find := func() bool {
		first = time.Time{}
		for s, at := range c.firstAt {
			if s >= from && (first.IsZero() || at.Before(first)) {
				first = at
			}
		}
		return !first.IsZero()
	}
	if err := c.wait(ctx, timeout, find); err != nil {
		return time.Time{}, fmt.Errorf("no row written after the signal (seq ≥ %d) reached any client within %s", from, timeout)
	}
	// Receipt times only grow: the first found is the earliest.
	return first, nil
}

// position is the position at which seq was received.
func (c *checker) position(seq int64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.positions[seq]
}

// gapEvents is the number of gap events received so far, over all clients.
func (c *checker) gapEvents() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.logs {
		n += l.gaps
	}
	return n
}

// verify reports every broken guarantee: the problems seen, and a client
// that did not get every row 1..last (rows skipped after a gap event are
// accepted only with allowGaps; without it a gap event is itself an error).
func (c *checker) verify(t *testing.T, last int64, allowGaps bool) {
	t.Helper()
	c.verifyTo(t, last, allowGaps)
}

// reporter is the part of testing.T that verify uses.
type reporter interface {
	Helper()
	Error(args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

func (c *checker) verifyTo(t reporter, last int64, allowGaps bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.problems {
		t.Error(p)
	}
	gaps, skipped := 0, int64(0)
	for _, l := range c.logs {
		gaps += l.gaps
		skipped += l.skipped
		if !allowGaps && l.gaps > 0 {
			t.Errorf("%s: %d gap event(s) (history_unavailable) where nothing may be lost", l.name, l.gaps)
		}
		if int64(l.received)+l.skipped != last-l.first {
			t.Errorf("%s: received %d rows and skipped %d after gap events, of %d written after seq %d", l.name, l.received, l.skipped, last-l.first, l.first)
		}
	}
	t.Logf("checker: %d clients, %d rows written; %d gap events, %d rows skipped right after them (never silently)", len(c.logs), last, gaps, skipped)
}
