package wsapi

import "time"

// clock is the time source of each connection's timer: the pings and the
// token's expiry (conn.tick), and how long a ping waits for its pong. The
// server runs on the system clock; tests use a fake one, so that what the
// timer does, and when, does not depend on how busy the machine is.
type clock interface {
	Now() time.Time
	// AfterFunc calls f on its own goroutine once d has passed, as
	// time.AfterFunc does.
	AfterFunc(d time.Duration, f func()) timer
}

// timer is what a connection keeps of AfterFunc (a *time.Timer on the
// system clock).
type timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// systemClock is the real clock. Its methods allocate nothing beyond what
// time.AfterFunc does: the *time.Timer goes into the interface as is.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }
