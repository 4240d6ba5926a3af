package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// channel is one joined Phoenix channel. Each postgres_changes binding and
// the channel's broadcast feed is a broker subscriber of its own, so that
// the broker matches its pattern (column filter included) and the frame
// around the event's shared payload is fixed per subscriber.
type channel struct {
	p       *phoenixConn
	topic   string  // "realtime:room1"
	name    string  // "room1"
	joinRef *string // the join's ref: every message to the channel carries it
	self    bool    // broadcast.self: the sender receives its own broadcasts
	ack     bool    // broadcast.ack: a client broadcast is acknowledged
	subs    []*channelSub

	// sent holds the client broadcasts this channel published, by content
	// (a broker may hand back a copy, possibly later: a cluster's), so
	// that its own feed skips them unless self (under sentMu). An entry
	// goes when its echo arrives or after sentTTL.
	sentMu sync.Mutex
	sent   map[string]time.Time
}

// joinConfig is the payload of a phx_join.
type joinConfig struct {
	Config struct {
		Broadcast struct {
			Self bool `json:"self"`
			Ack  bool `json:"ack"`
		} `json:"broadcast"`
		Presence struct {
			Enabled bool `json:"enabled"`
		} `json:"presence"`
		PostgresChanges []bindingSpec `json:"postgres_changes"`
		Private         bool          `json:"private"`
	} `json:"config"`
	AccessToken string `json:"access_token"`
}

// bindingSpec is one postgres_changes binding, echoed in the join reply.
type bindingSpec struct {
	ID     uint32  `json:"id"`
	Event  string  `json:"event"`
	Schema string  `json:"schema"`
	Table  *string `json:"table,omitempty"`
	Filter *string `json:"filter,omitempty"`
	// Select lists the columns to send (the key columns come too).
	Select []string `json:"select,omitempty"`
}

func decodePayload(data []byte, v any) error {
	err := json.Unmarshal(data, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("field %q must be a %s", te.Field, te.Type)
	}
	return err
}

// subTopic is a topic without its "realtime:" prefix.
func subTopic(topic string) string {
	if len(topic) >= 9 && strings.EqualFold(topic[:9], "realtime:") {
		return topic[9:]
	}
	return topic
}

// join answers a phx_join: the reply lists the bindings' ids in request
// order, and a system message "Subscribed to PostgreSQL" follows once
// every binding is live; events of the new subscriptions come after both.
func (p *phoenixConn) join(m *phoenix.Message) {
	c := p.c
	var cfg joinConfig
	if err := decodePayload(m.Payload, &cfg); err != nil {
		p.refuseJoin(m, "bad join payload: "+err.Error())
		return
	}
	if !c.limiter.Allow() {
		metrics.RateLimited.Inc()
		p.refuseJoin(m, fmt.Sprintf("rate limited: more than %g joins and leaves per second", c.s.cfg.SubscribeRate))
		return
	}
	ident, err := p.verifyJoinToken(cfg.AccessToken)
	if err != nil {
		p.refuseJoin(m, "invalid token: "+err.Error())
		return
	}
	if cfg.Config.Private {
		p.refuseJoin(m, "private channels are not supported by pgrealtime: join with private: false; the rules file decides who reads what")
		return
	}
	p.mu.Lock()
	old := p.channels[m.Topic]
	p.mu.Unlock()
	if old != nil { // a rejoin replaces the channel
		p.leave(old)
	}
	ch := &channel{p: p, topic: m.Topic, name: subTopic(m.Topic), joinRef: m.JoinRef,
		self: cfg.Config.Broadcast.Self, ack: cfg.Config.Broadcast.Ack}
	if ch.joinRef == nil {
		ch.joinRef = m.Ref
	}
	specs := cfg.Config.PostgresChanges
	// One subscriber for the bindings of each select (usually all of them).
	bySelect := map[string]*channelSub{}
	pre, post := phoenix.Envelope(p.vsn, ch.joinRef, ch.topic, phoenix.EventPostgresChanges, []byte(`{"ids":[`), []byte("}"))
	for i := range specs {
		b, sel, err := ch.binding(&specs[i], ident)
		if err != nil {
			p.refuseJoin(m, fmt.Sprintf("postgres_changes binding %d: %v", i, err))
			return
		}
		key := "\x00"
		if sel != nil {
			key = strings.Join(specs[i].Select, ",")
		}
		sub := bySelect[key]
		if sub == nil {
			sub = &channelSub{ch: ch, sel: sel, pre: pre, post: post}
			bySelect[key] = sub
			ch.subs = append(ch.subs, sub)
		}
		sub.bindings = append(sub.bindings, b)
		if !slices.ContainsFunc(sub.patterns, func(q broker.Pattern) bool { return q.String() == b.pattern.String() }) {
			sub.patterns = append(sub.patterns, b.pattern)
		}
	}
	if pat, ok := ch.broadcastPattern(); ok && c.s.checkSubscribe(ident, pat) == nil {
		pre, post := phoenix.Envelope(p.vsn, ch.joinRef, ch.topic, phoenix.EventBroadcast, nil, nil)
		ch.subs = append(ch.subs, &channelSub{ch: ch, patterns: []broker.Pattern{pat}, broadcast: true, pre: pre, post: post})
	}
	if n := p.subscriptions() + ch.patterns(); n > c.s.cfg.MaxSubscriptions {
		p.refuseJoin(m, fmt.Sprintf("too many subscriptions: a connection may hold at most %d (bindings and broadcast feeds of all its channels)", c.s.cfg.MaxSubscriptions))
		return
	}
	c.ident.Store(ident)
	c.armExpiry()

	// Subscribe every binding with deliveries held, so that the reply and
	// the system message are queued before any event.
	c.hold()
	ctx, cancel := context.WithTimeout(context.Background(), c.s.sinceWait)
	defer cancel()
	for i, sub := range ch.subs {
		if _, err := c.s.cfg.Broker.Subscribe(ctx, sub, sub.patterns, nil); err != nil {
			for _, done := range ch.subs[:i] {
				c.s.cfg.Broker.Remove(done)
			}
			c.release(p.msg(m.JoinRef, m.Ref, m.Topic, phoenix.EventReply, phoenix.Reply("error", phoenix.ErrorResponse("subscribe failed: "+err.Error()))))
			if errors.Is(err, broker.ErrClosed) {
				c.closeWith(StatusGoingAway, "server shutting down")
			}
			return
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.release()
		ch.unsubscribe()
		return
	}
	p.channels[ch.topic] = ch
	p.mu.Unlock()
	metrics.Subscriptions.Add(float64(ch.patterns()))

	if specs == nil {
		specs = []bindingSpec{}
	}
	reply := p.msg(m.JoinRef, m.Ref, m.Topic, phoenix.EventReply,
		phoenix.Reply("ok", mustJSON(map[string][]bindingSpec{"postgres_changes": specs})))
	var system, presence []byte
	if len(specs) > 0 {
		system = p.msg(ch.joinRef, nil, ch.topic, phoenix.EventSystem,
			systemPayload(ch.name, "postgres_changes", "ok", "Subscribed to PostgreSQL"))
	}
	if cfg.Config.Presence.Enabled {
		presence = p.msg(ch.joinRef, nil, ch.topic, phoenix.EventPresenceState, []byte("{}"))
	}
	c.release(reply, system, presence)
}

// refuseJoin answers a join with an error (logged at debug level: the
// client shows the reason).
func (p *phoenixConn) refuseJoin(m *phoenix.Message, reason string) {
	p.c.logger().Debug().Str(logTopic, m.Topic).Str("reason", reason).Msg("join refused")
	p.replyError(m, reason)
}

// binding validates a postgres_changes binding (setting its id) and
// returns it with its select (nil: every column).
func (ch *channel) binding(b *bindingSpec, ident *auth.Identity) (bd binding, sel map[string]bool, err error) {
	s := ch.p.c.s
	switch strings.ToUpper(b.Event) {
	case "*":
	case "INSERT", "UPDATE", "DELETE":
		bd.changeType = strings.ToUpper(b.Event)
	default:
		return bd, nil, fmt.Errorf(`event %q: want "*", "INSERT", "UPDATE" or "DELETE"`, b.Event)
	}
	if b.Schema == "" {
		return bd, nil, errors.New(`"schema" is required (e.g. "public")`)
	}
	table, filter := "", ""
	if b.Table != nil {
		table = *b.Table
	}
	if b.Filter != nil {
		filter = *b.Filter
	}
	b.ID = phoenix.BindingID(b.Event, b.Schema, table, filter+"\x00"+strings.Join(b.Select, ","))
	bd.id = b.ID
	if b.Select != nil {
		if len(b.Select) == 0 {
			return bd, nil, errors.New(`"select" is empty: omit it for every column`)
		}
		sel = map[string]bool{}
		for _, c := range b.Select {
			if c == "" {
				return bd, nil, errors.New(`"select" has an empty column name`)
			}
			sel[c] = true
		}
	}
	if table == "" || table == "*" {
		if filter != "" {
			return bd, nil, errors.New("a filter needs a table")
		}
		// Every table of the schema: the "*" pattern, narrowed to the
		// schema on delivery; each event still passes the read rules.
		if s.cfg.Rules == nil && !s.isAdmin(ident) {
			return bd, nil, fmt.Errorf("%w: no rules are configured, only the admin role may subscribe", rules.ErrForbidden)
		}
		bd.pattern = broker.Pattern{All: true}
		bd.schema = b.Schema
		return bd, sel, nil
	}
	pat, err := bindingPattern(phoenix.Collection(b.Schema, table), filter)
	if err != nil {
		return bd, nil, err
	}
	if err := s.checkSubscribe(ident, pat); err != nil {
		return bd, nil, fmt.Errorf("not allowed to read %s.%s: %v", b.Schema, table, err)
	}
	bd.pattern = pat
	return bd, sel, nil
}

// bindingPattern is the topic pattern of a binding on collection coll
// with an optional column filter (PROTOCOL section 2 syntax, one filter).
func bindingPattern(coll, filter string) (broker.Pattern, error) {
	if strings.ContainsAny(coll, ".*?&") || strings.IndexFunc(coll, unicode.IsSpace) >= 0 {
		return broker.Pattern{}, fmt.Errorf("table %q: names with '.', '*', '?', '&' or whitespace cannot be subscribed", coll)
	}
	src := coll
	if filter != "" {
		if strings.Contains(filter, "&") {
			return broker.Pattern{}, fmt.Errorf("filter %q: one filter per binding (add a binding per condition)", filter)
		}
		src = coll + "?" + filter
	}
	p, err := broker.ParsePattern(src)
	if err != nil {
		return broker.Pattern{}, fmt.Errorf("filter %q: %v", filter, err)
	}
	return p, nil
}

// broadcastPattern is the pattern of the channel's broadcast feed (the
// custom events of collection <name>), if its name is a collection name.
func (ch *channel) broadcastPattern() (broker.Pattern, bool) {
	if !validCollection(ch.name) {
		return broker.Pattern{}, false
	}
	return broker.Pattern{Collection: ch.name}, true
}

func validCollection(name string) bool {
	return name != "" && len(name) <= broker.MaxPatternLen &&
		!strings.ContainsAny(name, ".*?&") && strings.IndexFunc(name, unicode.IsSpace) < 0
}

// recheck returns an error when ident may no longer read one of the
// channel's bindings.
func (ch *channel) recheck(ident *auth.Identity) error {
	s := ch.p.c.s
	for _, sub := range ch.subs {
		for _, b := range sub.bindings {
			if b.pattern.All {
				continue // checked per event
			}
			if err := s.checkSubscribe(ident, b.pattern); err != nil {
				return fmt.Errorf("the new token may not read %s: %v", b.pattern.Collection, err)
			}
		}
	}
	return nil
}

// unsubscribe removes the channel's subscribers from the broker.
func (ch *channel) unsubscribe() {
	for _, sub := range ch.subs {
		ch.p.c.s.cfg.Broker.Remove(sub)
	}
	metrics.Subscriptions.Sub(float64(ch.patterns()))
}

// patterns counts the channel's broker subscriptions.
func (ch *channel) patterns() int {
	n := 0
	for _, sub := range ch.subs {
		n += len(sub.patterns)
	}
	return n
}
