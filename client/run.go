package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// Close codes of the server (PROTOCOL section 3).
const (
	closeTokenExpired = websocket.StatusCode(4001)
	closeSlowConsumer = websocket.StatusCode(4008)
)

// fatalError is a refusal that retrying cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// run keeps a connection up until Close or a refusal. The result of the
// first attempt goes to first.
func (c *Client) run(first chan<- error) {
	defer close(c.done)
	attempt := 0
	for {
		sess, err := c.connect()
		if err == nil {
			err = c.serve(sess, first)
			first = nil
			if err == nil {
				attempt = 0
			}
		}
		if c.ctx.Err() != nil {
			c.finish(ErrClosed)
			return
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			if first != nil {
				first <- fatal.err
			}
			c.report(fatal.err)
			c.finish(fatal.err)
			return
		}
		c.report(err)
		c.setState(StateReconnecting)
		select {
		case <-time.After(c.backoff(attempt)):
		case <-c.ctx.Done():
			c.finish(ErrClosed)
			return
		}
		attempt++
	}
}

// finish ends the client with err and closes every subscription.
func (c *Client) finish(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	subs := c.subs
	c.subs = nil
	close(c.live)
	c.mu.Unlock()
	for _, s := range subs {
		s.stop()
	}
	c.setState(StateClosed)
}

// connect opens a WebSocket with the current token. A refused token is
// refreshed through GetToken (and fatal without it).
func (c *Client) connect() (*session, error) {
	c.mu.Lock()
	token := c.token
	c.mu.Unlock()
	h := http.Header{}
	for k, v := range c.opts.Header {
		h[k] = v
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 15*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{HTTPClient: c.opts.HTTPClient, HTTPHeader: h})
	if err == nil {
		ws.SetReadLimit(-1)
		return newSession(ws), nil
	}
	if resp == nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		if c.opts.GetToken == nil {
			return nil, &fatalError{fmt.Errorf("connect: token refused (HTTP 401) and no GetToken to get another: %w", err)}
		}
		if rerr := c.refreshToken(); rerr != nil {
			return nil, rerr
		}
		return nil, fmt.Errorf("connect: token refused (HTTP 401), got a new one: %w", err)
	case http.StatusForbidden, http.StatusNotFound, http.StatusBadRequest:
		return nil, &fatalError{fmt.Errorf("connect: refused with HTTP %d: %w", resp.StatusCode, err)}
	}
	return nil, fmt.Errorf("connect: %w", err) // 503 (full, shutting down) and the like: retry
}

// serve subscribes every subscription on sess, reports the first
// connection, keeps the token fresh, and returns when sess ends.
func (c *Client) serve(sess *session, first chan<- error) error {
	readCtx, stopRead := context.WithCancel(c.ctx)
	defer stopRead()
	go sess.read(readCtx, c.route, func(r reply) {
		if r.Type == "error" {
			e := r.Error
			c.report(&e)
		}
	})
	if err := c.resubscribe(sess); err != nil {
		sess.ws.CloseNow()
		<-sess.closed
		return err
	}
	c.mu.Lock()
	c.sess, c.connected = sess, true
	close(c.live)
	c.live = make(chan struct{})
	c.mu.Unlock()
	c.setState(StateConnected)
	if first != nil {
		first <- nil
	}

	refresh, stopRefresh := c.refreshTimer()
	defer func() { stopRefresh() }()
	var err error
loop:
	for {
		select {
		case <-sess.closed:
			err = sess.closeErr
			break loop
		case <-refresh:
			if rerr := c.refreshOn(sess); rerr != nil {
				c.report(rerr)
			}
			refresh, stopRefresh = c.refreshTimer()
		case <-c.ctx.Done():
			sess.ws.Close(websocket.StatusNormalClosure, "client closed")
			<-sess.closed
			err = ErrClosed
			break loop
		}
	}
	c.mu.Lock()
	c.sess, c.connected = nil, false
	c.mu.Unlock()
	return c.afterClose(err)
}

// resubscribe subscribes every subscription again, from the oldest of
// their positions (each one drops what it already has).
func (c *Client) resubscribe(sess *session) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	subs := append([]*Subscription(nil), c.subs...)
	c.mu.Unlock()
	if len(subs) == 0 {
		return nil
	}
	since := ""
	for _, s := range subs {
		if p := s.Position(); p != "" && (since == "" || after(since, p)) {
			since = p
		}
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	err := c.subscribeOn(ctx, sess, subs, since)
	var notStarted *notStartedError
	if errors.As(err, &notStarted) {
		return fmt.Errorf("resubscribe: %w", err) // reconnect later
	}
	var e *Error
	if errors.As(err, &e) {
		// A topic the server now refuses (forbidden after a rule change…):
		// nothing was subscribed; retrying cannot fix it.
		return &fatalError{fmt.Errorf("resubscribe: %w", err)}
	}
	return err
}

// afterClose classifies how a connection ended.
func (c *Client) afterClose(err error) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	switch websocket.CloseStatus(err) {
	case closeTokenExpired:
		if c.opts.GetToken == nil {
			return &fatalError{errors.New("token expired (4001) and no GetToken to refresh it")}
		}
		if rerr := c.refreshToken(); rerr != nil {
			return rerr
		}
		return fmt.Errorf("token expired (4001): reconnecting with a new token")
	case websocket.StatusPolicyViolation, websocket.StatusMessageTooBig:
		return &fatalError{fmt.Errorf("closed by the server: %w", err)}
	case closeSlowConsumer:
		return fmt.Errorf("closed as a slow consumer (4008): resuming: %w", err)
	}
	return fmt.Errorf("connection lost: %w", err)
}

// refreshToken asks GetToken for a new token.
func (c *Client) refreshToken() error {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	tok, err := c.opts.GetToken(ctx)
	if err != nil {
		return fmt.Errorf("get token: %w", err)
	}
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
	return nil
}

// refreshTimer fires when the current token should be refreshed (never
// without GetToken or exp).
func (c *Client) refreshTimer() (<-chan time.Time, func() bool) {
	c.mu.Lock()
	token := c.token
	c.mu.Unlock()
	d, ok := refreshDelay(time.Now(), tokenExpiry(token), c.opts.RefreshBefore)
	if c.opts.GetToken == nil || !ok {
		return nil, func() bool { return false }
	}
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// refreshOn gets a new token and sends it with an auth message.
func (c *Client) refreshOn(sess *session) error {
	if err := c.refreshToken(); err != nil {
		return err
	}
	c.mu.Lock()
	token := c.token
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	r, err := sess.request(ctx, map[string]any{"type": "auth", "token": token})
	if err != nil {
		return fmt.Errorf("refresh token: %w", err)
	}
	if len(r.Revoked) > 0 {
		return fmt.Errorf("refresh token: the new identity may not read %v: no longer delivered", r.Revoked)
	}
	return nil
}
