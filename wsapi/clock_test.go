package wsapi

import (
	"sync"
	"time"
)

// fakeClock is a clock that moves only when a test calls Advance. A timer
// that comes due (on Advance, or on Reset with d <= 0, as time.AfterFunc
// would) runs its function on a goroutine of its own.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	fired  int // timer functions started
	resets int // AfterFunc and Reset calls
}

var _ clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) timer {
	t := &fakeTimer{c: c, f: f}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	t.Reset(d)
	return t
}

// Advance moves the clock by d and starts every timer that came due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fireLocked()
}

// AdvanceTo moves the clock to at (never back).
func (c *fakeClock) AdvanceTo(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if at.After(c.now) {
		c.now = at
	}
	c.fireLocked()
}

func (c *fakeClock) fireLocked() {
	for _, t := range c.timers {
		if t.armed && !t.at.After(c.now) {
			t.armed = false
			c.fired++
			go t.f()
		}
	}
}

// counts returns how many timer functions were started and how many
// times a timer was armed.
func (c *fakeClock) counts() (fired, resets int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired, c.resets
}

type fakeTimer struct {
	c       *fakeClock
	f       func()
	at      time.Time
	armed   bool
	touches int // Reset and Stop calls
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.at, t.armed = t.c.now.Add(d), true
	t.c.resets++
	t.touches++
	t.c.fireLocked()
	return was
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armed = false
	t.touches++
	return was
}

// state reports when t fires next (zero when it is not armed) and how
// many times it was reset or stopped.
func (t *fakeTimer) state() (due time.Time, touches int) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.armed {
		due = t.at
	}
	return due, t.touches
}
