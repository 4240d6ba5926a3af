package wsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// Client broadcasts of the Supabase endpoint (PROTOCOL section 9).

// sentTTL bounds how long a channel waits for the echo of its own
// broadcast; sentMax bounds the entries kept.
const (
	sentTTL = 10 * time.Second
	sentMax = 1024
)

// sentKey identifies a client broadcast: the channel sets its timestamp
// (nanoseconds) itself. Not its data, which the rules may trim on the way.
func sentKey(ev *broker.Event) string {
	return ev.Name + "\x00" + ev.Timestamp.UTC().Format(time.RFC3339Nano)
}

// broadcast handles a client broadcast: published to collection <name> as
// a live custom event (reaching the channel's other members, /realtime
// subscribers, and every node) when the broadcast rule allows it.
func (ch *channel) broadcast(m *phoenix.Message) {
	p, s := ch.p, ch.p.c.s
	var body struct {
		Event   *string         `json:"event"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := decodePayload(m.Payload, &body); err != nil || body.Event == nil || *body.Event == "" {
		p.replyError(m, `broadcast needs a payload {"type":"broadcast","event":"<name>","payload":{…}}`)
		return
	}
	if !validCollection(ch.name) {
		p.replyError(m, fmt.Sprintf("cannot broadcast on %q: the channel name must be a collection name (no '.', '*', '?', '&' or whitespace)", ch.topic))
		return
	}
	ident := p.c.ident.Load()
	var err error
	if s.cfg.Rules == nil {
		err = fmt.Errorf("%w: no rules file is configured, so no broadcast rule allows client broadcasts", rules.ErrForbidden)
	} else {
		err = s.cfg.Rules.CheckBroadcast(ident, ch.name, *body.Event)
	}
	if err != nil {
		p.replyError(m, err.Error())
		return
	}
	ev := &broker.Event{Kind: broker.KindCustom, Collection: ch.name, Name: *body.Event, Timestamp: time.Now().UTC()}
	if pl := bytes.TrimSpace(body.Payload); len(pl) > 0 && string(pl) != "null" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, pl); err == nil {
			ev.Data = buf.Bytes()
		}
	}
	supabaseBroadcasts.Inc()
	if !ch.self {
		ch.remember(ev)
	}
	err = s.cfg.Broker.PublishLive(context.Background(), ev)
	if err != nil {
		p.replyError(m, "broadcast failed: "+err.Error())
		return
	}
	if ch.ack {
		p.replyOK(m, nil)
	}
}

// remember notes a broadcast the channel is about to publish.
func (ch *channel) remember(ev *broker.Event) {
	now := time.Now()
	ch.sentMu.Lock()
	defer ch.sentMu.Unlock()
	if ch.sent == nil {
		ch.sent = map[string]time.Time{}
	}
	for k, at := range ch.sent {
		if now.Sub(at) > sentTTL || len(ch.sent) >= sentMax {
			delete(ch.sent, k)
		}
	}
	ch.sent[sentKey(ev)] = now
}

// isOwn reports whether ev is the echo of a broadcast this channel sent
// (forgetting it: the echo comes once).
func (ch *channel) isOwn(ev *broker.Event) bool {
	ch.sentMu.Lock()
	defer ch.sentMu.Unlock()
	if len(ch.sent) == 0 {
		return false
	}
	k := sentKey(ev)
	_, ok := ch.sent[k]
	delete(ch.sent, k)
	return ok
}
