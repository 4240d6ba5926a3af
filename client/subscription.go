package client

import (
	"context"
	"sync"
)

// Subscription is a set of topics subscribed together. Its events arrive,
// in order and once each, on Events.
type Subscription struct {
	c      *Client
	topics []string
	parsed []topic

	in   chan Event    // filled by the connection's reader
	out  chan Event    // read by the app
	done chan struct{} // closed by Unsubscribe or Close

	mu      sync.Mutex
	pos     string // position of the last event handed over (or subscribed at)
	stopped bool
}

func newSubscription(c *Client, topics []string, since string, buffer int) *Subscription {
	s := &Subscription{
		c:      c,
		topics: append([]string(nil), topics...),
		in:     make(chan Event, buffer),
		out:    make(chan Event),
		done:   make(chan struct{}),
		pos:    since,
	}
	for _, t := range topics {
		s.parsed = append(s.parsed, parseTopic(t))
	}
	go s.pump()
	return s
}

// Events delivers the subscription's events. It is closed after
// Unsubscribe, Close, or a refusal that ends the client.
func (s *Subscription) Events() <-chan Event { return s.out }

// Topics are the subscription's topics as given to Subscribe.
func (s *Subscription) Topics() []string { return append([]string(nil), s.topics...) }

// Position is the position of the last event handed to Events (or the
// position the subscription started at): a valid since to resume from
// later, for instance with another Client after a restart of the app.
func (s *Subscription) Position() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos
}

// Unsubscribe stops the subscription and closes Events. Topics that another
// subscription of the client also has stay subscribed on the server.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	return s.c.unsubscribe(ctx, s)
}

// pump moves events from in to out so that a slow app holds up only its
// own subscription's buffer before it holds up the socket.
func (s *Subscription) pump() {
	defer close(s.out)
	for {
		select {
		case ev := <-s.in:
			select {
			case s.out <- ev:
			case <-s.done:
				return
			}
		case <-s.done:
			return
		}
	}
}

// stop ends the subscription (once).
func (s *Subscription) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.stopped = true
		close(s.done)
	}
}

// matches reports whether ev belongs to this subscription by its topics.
func (s *Subscription) matches(ev *Event) bool {
	for _, t := range s.parsed {
		if t.matches(ev) {
			return true
		}
	}
	return false
}

// onCollection reports whether a topic of s covers ev's collection.
func (s *Subscription) onCollection(ev *Event) bool {
	for _, t := range s.parsed {
		if t.all || t.collection == ev.Collection {
			return true
		}
	}
	return false
}

// accept records ev's position and reports whether ev is new for s.
func (s *Subscription) accept(ev *Event) bool {
	if ev.Position == "" {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos != "" && !after(ev.Position, s.pos) {
		return false
	}
	s.pos = ev.Position
	return true
}

// push hands ev to the app's side; it waits while the buffer is full.
func (s *Subscription) push(ctx context.Context, ev Event) {
	select {
	case s.in <- ev:
	case <-s.done:
	case <-ctx.Done():
	}
}

// startAt sets the position a subscription without one starts from (the
// subscribed reply's); one with a since keeps it, its replay follows.
func (s *Subscription) startAt(pos string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos == "" {
		s.pos = pos
	}
}

// advanceTo moves the position forward to pos (never back).
func (s *Subscription) advanceTo(pos string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos != "" && (s.pos == "" || after(pos, s.pos)) {
		s.pos = pos
	}
}

// reset forgets the position after a gap: the next subscribe starts live.
func (s *Subscription) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pos = ""
}
