package wsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// Error codes of PROTOCOL section 3.
const (
	CodeBadRequest           = "bad_request"
	CodeInvalidTopic         = "invalid_topic"
	CodeForbidden            = "forbidden"
	CodeTooManySubscriptions = "too_many_subscriptions"
	CodeRateLimited          = "rate_limited"
	CodeInvalidToken         = "invalid_token"
	CodeTokenExpired         = "token_expired"
	CodeHistoryUnavailable   = "history_unavailable"
)

type limitsMsg struct {
	MaxSubscriptions int     `json:"max_subscriptions"`
	SubscribeRate    float64 `json:"subscribe_rate"`
	MaxMessageBytes  int64   `json:"max_message_bytes"`
}

type connectedMsg struct {
	Type         string    `json:"type"`
	ConnectionID string    `json:"connection_id"`
	ServerTime   string    `json:"server_time"`
	Limits       limitsMsg `json:"limits"`
}

type topicsMsg struct {
	Type     string   `json:"type"`
	ID       *string  `json:"id,omitempty"`
	Topics   []string `json:"topics"`
	Position string   `json:"position,omitempty"`
}

type authenticatedMsg struct {
	Type      string   `json:"type"`
	ID        *string  `json:"id,omitempty"`
	Subject   string   `json:"subject"`
	Role      string   `json:"role"`
	ExpiresAt string   `json:"expires_at,omitempty"`
	Revoked   []string `json:"revoked"`
}

type pongMsg struct {
	Type string  `json:"type"`
	ID   *string `json:"id,omitempty"`
}

type errorMsg struct {
	Type    string  `json:"type"`
	ID      *string `json:"id,omitempty"`
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Topic   *string `json:"topic,omitempty"`
}

// request is any client message.
type request struct {
	Type   string   `json:"type"`
	Topics []string `json:"topics"`
	Token  *string  `json:"token"`
	Since  *string  `json:"since"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("wsapi: encode %T: %v", v, err))
	}
	return b
}

func (c *conn) sendJSON(v any) { c.enqueue(item{raw: mustJSON(v)}) }

func errorReply(id *string, code, msg string, topic *string) []byte {
	return mustJSON(errorMsg{Type: "error", ID: id, Code: code, Message: msg, Topic: topic})
}

func (c *conn) sendError(id *string, code, msg string, topic *string) {
	c.enqueue(item{raw: errorReply(id, code, msg, topic)})
	if code == CodeBadRequest {
		c.countAbuse()
	}
}

// countAbuse counts a bad request; too many in a burst close the
// connection with 1008.
func (c *conn) countAbuse() {
	if c.abuse == nil {
		c.abuse = rate.NewLimiter(abuseRate, abuseBurst) // on the first one: most connections never need it
	}
	if !c.abuse.Allow() {
		c.closeWith(StatusPolicyViolation, "too many bad requests")
	}
}

// handle answers one client frame.
func (c *conn) handle(data []byte) {
	var head struct {
		Type json.RawMessage `json:"type"`
		ID   json.RawMessage `json:"id"`
	}
	// null unmarshals into a struct without error: only an object is a message.
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' || json.Unmarshal(data, &head) != nil {
		c.sendError(nil, CodeBadRequest, "message is not a JSON object", nil)
		return
	}
	var id *string
	if len(head.ID) > 0 && string(head.ID) != "null" {
		var s string
		if err := json.Unmarshal(head.ID, &s); err != nil {
			c.sendError(nil, CodeBadRequest, `"id" must be a string`, nil)
			return
		}
		id = &s
	}
	var req request
	if err := json.Unmarshal(data, &req); err != nil {
		msg := "malformed message"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			msg = fmt.Sprintf("field %q has the wrong type (want %s)", te.Field, te.Type)
		}
		c.sendError(id, CodeBadRequest, msg, nil)
		return
	}
	switch req.Type {
	case "subscribe":
		c.subscribe(id, &req)
	case "unsubscribe":
		c.unsubscribe(id, &req)
	case "auth":
		c.authenticate(id, &req)
	case "ping":
		c.sendJSON(pongMsg{Type: "pong", ID: id})
	case "":
		c.sendError(id, CodeBadRequest, `missing field "type"`, nil)
	default:
		c.sendError(id, CodeBadRequest, fmt.Sprintf("unknown message type %q (want subscribe, unsubscribe, auth or ping)", req.Type), nil)
	}
}

func (c *conn) rateLimited(id *string) bool {
	if c.limiter.Allow() {
		return false
	}
	metrics.RateLimited.Inc()
	c.sendError(id, CodeRateLimited, fmt.Sprintf("more than %g subscribe/unsubscribe requests per second", c.s.cfg.SubscribeRate), nil)
	return true
}

func (c *conn) subscribe(id *string, req *request) {
	if req.Topics == nil {
		c.sendError(id, CodeBadRequest, `missing field "topics"`, nil)
		return
	}
	if len(req.Topics) == 0 {
		c.sendError(id, CodeBadRequest, `"topics" is empty`, nil)
		return
	}
	var since *broker.Position
	if req.Since != nil {
		p, err := broker.ParsePosition(*req.Since)
		if err != nil {
			c.sendError(id, CodeBadRequest, fmt.Sprintf(`"since": %v`, err), nil)
			return
		}
		since = &p
	}
	if c.rateLimited(id) {
		return
	}
	ident := c.ident.Load()
	var (
		pats []broker.Pattern
		keys []string
		from []int // index in req.Topics of each new pattern
	)
	seen := make(map[string]bool, len(req.Topics))
	for i, t := range req.Topics {
		p, err := broker.ParsePattern(t)
		if err != nil {
			c.sendError(id, CodeInvalidTopic, fmt.Sprintf("invalid topic %q: %v", t, err), &req.Topics[i])
			return
		}
		if err := c.s.checkSubscribe(ident, p); err != nil {
			c.sendError(id, CodeForbidden, fmt.Sprintf("not allowed to subscribe to %q: %v", t, err), &req.Topics[i])
			return
		}
		k := p.String()
		if c.subs.has(k) || seen[k] {
			continue
		}
		seen[k] = true
		pats, keys, from = append(pats, p), append(keys, k), append(from, i)
	}
	if free := c.s.cfg.MaxSubscriptions - len(c.subs); len(pats) > free {
		t := &req.Topics[from[max(free, 0)]]
		c.sendError(id, CodeTooManySubscriptions, fmt.Sprintf("a connection may hold at most %d subscriptions (it has %d)", c.s.cfg.MaxSubscriptions, len(c.subs)), t)
		return
	}
	reply := topicsMsg{Type: "subscribed", ID: id, Topics: req.Topics}
	if pos := c.s.cfg.Broker.Position(); len(pats) == 0 && !pos.IsZero() {
		reply.Position = pos.String()
		c.sendJSON(reply)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), c.s.sinceWait)
	go func() { // a closing connection stops waiting for the stream
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	// The reply's position is always a valid since: before the WAL stream
	// has started, the broker knows no position yet (not even the stream's
	// start, <LSN>:0), so wait for it. Wait for a stream that is still
	// catching up to since here too, rather than in Subscribe, so that live
	// events of the existing subscriptions are not held back meanwhile.
	// When the wait ends first, Subscribe below answers with the reason.
	var want broker.Position
	if since != nil {
		want = *since
	}
	_ = c.s.cfg.Broker.WaitFor(ctx, want)
	if c.s.cfg.Broker.Position().IsZero() {
		cancel()
		if !c.isDone() {
			c.sendError(id, CodeHistoryUnavailable, fmt.Sprintf("history unavailable: the WAL stream has not started within %s (is Postgres reachable? see /readyz), so there is no position to give; nothing was subscribed: subscribe again", c.s.sinceWait), nil)
		}
		return
	}
	if len(pats) == 0 {
		cancel()
		reply.Position = c.s.cfg.Broker.Position().String()
		c.sendJSON(reply)
		return
	}
	c.hold()
	pos, err := c.s.cfg.Broker.Subscribe(ctx, c, pats, since)
	cancel()
	if err != nil {
		switch {
		case errors.Is(err, broker.ErrHistoryUnavailable):
			c.release(errorReply(id, CodeHistoryUnavailable, err.Error(), nil))
		case errors.Is(err, context.DeadlineExceeded) && since != nil:
			c.release(errorReply(id, CodeHistoryUnavailable, fmt.Sprintf("%v: the stream has not reached position %s within %s", broker.ErrHistoryUnavailable, since, c.s.sinceWait), nil))
		case errors.Is(err, broker.ErrClosed):
			c.release(nil)
			c.closeWith(StatusGoingAway, "server shutting down")
		case c.isDone(), errors.Is(err, context.Canceled):
			c.release(nil) // the connection is closing
		default:
			c.release(nil)
			c.logger().Error().Err(err).Msg("subscribe failed")
			c.closeWith(websocket.StatusInternalError, "internal error")
		}
		return
	}
	c.subMu.Lock()
	for i, k := range keys {
		c.subs = append(c.subs, subscription{key: k, pattern: pats[i], topic: req.Topics[from[i]]})
	}
	c.subMu.Unlock()
	metrics.Subscriptions.Add(float64(len(pats)))
	reply.Position = pos.String()
	c.release(mustJSON(reply))
}

func (c *conn) unsubscribe(id *string, req *request) {
	if req.Topics == nil {
		c.sendError(id, CodeBadRequest, `missing field "topics"`, nil)
		return
	}
	if len(req.Topics) == 0 {
		c.sendError(id, CodeBadRequest, `"topics" is empty`, nil)
		return
	}
	if c.rateLimited(id) {
		return
	}
	var (
		pats []broker.Pattern
		keys []string
	)
	for i, t := range req.Topics {
		p, err := broker.ParsePattern(t)
		if err != nil {
			c.sendError(id, CodeInvalidTopic, fmt.Sprintf("invalid topic %q: %v", t, err), &req.Topics[i])
			return
		}
		k := p.String()
		if c.subs.has(k) && !slices.Contains(keys, k) {
			pats, keys = append(pats, p), append(keys, k)
		}
	}
	if len(pats) > 0 {
		c.s.cfg.Broker.Unsubscribe(c, pats)
		c.subMu.Lock()
		n := len(c.subs)
		c.subs = c.subs.remove(keys...)
		metrics.Subscriptions.Sub(float64(n - len(c.subs)))
		c.subMu.Unlock()
	}
	c.sendJSON(topicsMsg{Type: "unsubscribed", ID: id, Topics: req.Topics})
}

// authenticate swaps the connection's identity for the token's, then drops
// the subscriptions the new identity may no longer read. An invalid token
// leaves the connection and its identity as they were.
func (c *conn) authenticate(id *string, req *request) {
	if req.Token == nil {
		c.sendError(id, CodeBadRequest, `missing field "token"`, nil)
		return
	}
	if *req.Token == "" {
		c.sendError(id, CodeInvalidToken, "token is empty", nil)
		return
	}
	ident, err := c.s.verify(*req.Token)
	if err != nil {
		c.sendError(id, tokenErrorCode(err), err.Error(), nil)
		return
	}
	c.ident.Store(ident)
	c.armExpiry()

	var (
		pats    []broker.Pattern
		keys    []string
		revoked = []string{}
	)
	for _, sub := range c.subs {
		if c.s.checkSubscribe(ident, sub.pattern) != nil {
			pats, keys = append(pats, sub.pattern), append(keys, sub.key)
			revoked = append(revoked, sub.topic)
		}
	}
	if len(pats) > 0 {
		c.s.cfg.Broker.Unsubscribe(c, pats)
		c.subMu.Lock()
		c.subs = c.subs.remove(keys...)
		c.subMu.Unlock()
		metrics.Subscriptions.Sub(float64(len(pats)))
		sort.Strings(revoked)
	}
	msg := authenticatedMsg{Type: "authenticated", ID: id, Subject: ident.Subject, Role: ident.Role, Revoked: revoked}
	if !ident.ExpiresAt.IsZero() {
		msg.ExpiresAt = ident.ExpiresAt.UTC().Format(time.RFC3339)
	}
	c.logger().Info().Strs("revoked", revoked).Msg("re-authenticated")
	c.sendJSON(msg)
}
