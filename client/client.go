package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultEventBuffer = 256
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("pgrealtime client closed")

// State of a Client's connection.
type State int

const (
	StateConnecting   State = iota // first connection attempt
	StateConnected                 // connected, every subscription live
	StateReconnecting              // lost the connection, trying again
	StateClosed                    // Close was called or a refusal ended the client
)

func (s State) String() string {
	return [...]string{"connecting", "connected", "reconnecting", "closed"}[s]
}

// Options configure a Client. Token or GetToken may be empty for an
// anonymous connection.
type Options struct {
	// Token is the JWT to connect with.
	Token string
	// GetToken returns a fresh token: called before the current one
	// expires, after a 4001 close and after a refused upgrade. Without it a
	// token is never refreshed and its expiry ends the client.
	GetToken func(ctx context.Context) (string, error)
	// RefreshBefore is how long before exp the token is refreshed; zero: a
	// quarter of its remaining lifetime, at most 30 s; negative: never
	// (the server then closes with 4001 at expiry and the client
	// reconnects with a new token).
	RefreshBefore time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts (doubling, with jitter).
	MinBackoff, MaxBackoff time.Duration
	// EventBuffer is the number of events each subscription buffers.
	EventBuffer int
	// HTTPClient and Header are used for the WebSocket upgrade.
	HTTPClient *http.Client
	Header     http.Header
	// OnState is called (from the client's goroutine) on each state change.
	OnState func(State)
	// OnError is called with errors the client recovers from (a lost
	// connection, a failed token refresh, an error reply without request).
	OnError func(error)
}

// Client is a connection to pgrealtime that reconnects and resumes by
// itself. Its methods are safe for concurrent use.
type Client struct {
	url  string
	opts Options

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	done   chan struct{} // the connection loop ended

	opMu sync.Mutex // one subscribe/unsubscribe/resubscribe on the wire at a time

	mu        sync.Mutex
	subs      []*Subscription
	sess      *session // nil while disconnected
	live      chan struct{}
	replaying atomic.Int32 // subscribes with since whose replay may still come
	token     string
	state     State
	err       error
	connected bool
}

// Dial connects to url (ws:// or wss://, path /realtime) and keeps the
// connection up until Close. It returns once the first connection is
// established, or with the error that refused it.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = DefaultEventBuffer
	}
	c := &Client{url: url, opts: opts, token: opts.Token, done: make(chan struct{}), live: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.token == "" && opts.GetToken != nil {
		tok, err := opts.GetToken(ctx)
		if err != nil {
			return nil, fmt.Errorf("get token: %w", err)
		}
		c.token = tok
	}
	first := make(chan error, 1)
	go c.run(first)
	select {
	case err := <-first:
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

// Subscribe subscribes topics (PROTOCOL section 2 patterns, filters
// included) as one subscription. With since (a position from an earlier
// Subscription.Position), retained events after it are delivered first;
// when they are gone the first event is a TypeGap. An error reply
// (forbidden, invalid_topic, too_many_subscriptions, …) is returned as
// *Error and nothing is subscribed; history_unavailable without since means
// the server's stream has not started yet (Postgres unreachable since the
// server started): try again later. While the client is reconnecting,
// Subscribe waits (up to ctx) for the connection.
func (c *Client) Subscribe(ctx context.Context, topics []string, since string) (*Subscription, error) {
	if len(topics) == 0 {
		return nil, errors.New("subscribe: no topics")
	}
	sub := newSubscription(c, topics, since, c.opts.EventBuffer)
	c.opMu.Lock()
	defer c.opMu.Unlock()
	for {
		sess, err := c.waitLive(ctx)
		if err != nil {
			sub.stop()
			return nil, err
		}
		// Registered before the request: with since, the replay follows
		// the server's reply and is routed by the connection's reader,
		// which hands events only to registered subscriptions. Counted as
		// replaying from before that, so that no live event moves the new
		// subscription's position past the replay.
		if since != "" {
			c.replaying.Add(1)
		}
		c.mu.Lock()
		c.subs = append(c.subs, sub)
		c.mu.Unlock()
		err = c.subscribeOn(ctx, sess, []*Subscription{sub}, since)
		if since != "" {
			c.replaying.Add(-1)
		}
		if err == nil {
			return sub, nil
		}
		c.forget(sub)
		var e *Error
		if errors.As(err, &e) || ctx.Err() != nil {
			sub.stop()
			return nil, err
		}
		// The connection dropped meanwhile: try again on the next one.
	}
}

// forget removes sub from the registered subscriptions.
func (c *Client) forget(sub *Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.subs[:0]
	for _, s := range c.subs {
		if s != sub {
			kept = append(kept, s)
		}
	}
	clear(c.subs[len(kept):])
	c.subs = kept
}

// notStartedError: the server refused a subscribe without since because its
// stream has not started yet; retrying later helps.
type notStartedError struct{ err *Error }

func (e *notStartedError) Error() string { return e.err.Error() }
func (e *notStartedError) Unwrap() error { return e.err }

// subscribeOn subscribes subs on sess with since (empty: live only). On
// history_unavailable each sub gets a gap event and is subscribed live.
// Called with opMu held.
func (c *Client) subscribeOn(ctx context.Context, sess *session, subs []*Subscription, since string) error {
	var topics []string
	for _, s := range subs {
		topics = append(topics, s.topics...)
	}
	msg := map[string]any{"type": "subscribe", "topics": topics}
	if since != "" {
		msg["since"] = since
		c.replaying.Add(1) // until the pong below: the stream is not in order
		defer c.replaying.Add(-1)
	}
	r, err := sess.request(ctx, msg)
	var e *Error
	if errors.As(err, &e) && e.Code == "history_unavailable" && since == "" {
		// Refused without since: the server's stream has not started
		// (Postgres unreachable since it started). Not a gap.
		return &notStartedError{e}
	}
	if errors.As(err, &e) && e.Code == "history_unavailable" {
		for _, s := range subs {
			s.reset()
			s.push(c.ctx, Event{Type: TypeGap, Timestamp: time.Now().UTC()})
		}
		return c.subscribeOn(ctx, sess, subs, "")
	}
	if err != nil {
		return err
	}
	if since == "" {
		for _, s := range subs {
			s.startAt(r.Position)
		}
		return nil
	}
	// The replay follows the reply and precedes the answer to a ping: once
	// the pong is here, every subscription has everything up to the reply's
	// position, also one that matched none of it (a quiet subscription
	// then resumes from there, not from an old position the history may
	// have dropped).
	if _, err := sess.request(ctx, map[string]any{"type": "ping"}); err != nil {
		return err
	}
	for _, s := range subs {
		s.advanceTo(r.Position)
	}
	return nil
}

func (c *Client) unsubscribe(ctx context.Context, sub *Subscription) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	kept := c.subs[:0]
	still := map[string]bool{}
	for _, s := range c.subs {
		if s != sub {
			kept = append(kept, s)
			for _, t := range s.topics {
				still[t] = true
			}
		}
	}
	c.subs = kept
	sess := c.sess
	c.mu.Unlock()
	sub.stop()
	var gone []string
	for _, t := range sub.topics {
		if !still[t] {
			gone = append(gone, t)
		}
	}
	if sess == nil || len(gone) == 0 {
		return nil // a reconnect subscribes only the remaining topics
	}
	_, err := sess.request(ctx, map[string]any{"type": "unsubscribe", "topics": gone})
	return err
}

// State is the connection's current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Err is why the client ended (nil while it runs; ErrClosed after Close).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the client has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection (1000) and every subscription's Events.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// waitLive returns the current session once every subscription is live on it.
func (c *Client) waitLive(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		sess, live, err := c.sess, c.live, c.err
		connected := c.connected
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if connected && sess != nil {
			return sess, nil
		}
		select {
		case <-live:
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) setState(s State) {
	c.mu.Lock()
	changed := c.state != s
	c.state = s
	c.mu.Unlock()
	if changed && c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

func (c *Client) report(err error) {
	if c.opts.OnError != nil && err != nil {
		c.opts.OnError(err)
	}
}

// route hands an event to the subscriptions it belongs to.
func (c *Client) route(ev *Event) {
	c.mu.Lock()
	subs := append([]*Subscription(nil), c.subs...)
	c.mu.Unlock()
	matched := false
	for _, s := range subs {
		if s.matches(ev) {
			matched = true
			if s.accept(ev) {
				s.push(c.ctx, *ev)
			}
		}
	}
	if !matched {
		for _, s := range subs {
			if s.onCollection(ev) && s.accept(ev) {
				s.push(c.ctx, *ev)
			}
		}
	}
	// Live events arrive in position order: every subscription has all of
	// its events up to this one, matched or not.
	if ev.Position != "" && c.replaying.Load() == 0 {
		for _, s := range subs {
			s.advanceTo(ev.Position)
		}
	}
}

// backoff is the wait before reconnection attempt n (from 0).
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MinBackoff << min(n, 20)
	if d > c.opts.MaxBackoff || d <= 0 {
		d = c.opts.MaxBackoff
	}
	return d/2 + rand.N(d/2+1) // jitter: [d/2, d]
}
