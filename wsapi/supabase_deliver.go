package wsapi

import (
	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
)

// Delivery to the Supabase endpoint's subscribers: filtering, then the
// frame around the event's shared payload.

// channelSub is one broker subscriber of a channel: a postgres_changes
// binding, or (broadcast) the custom events of the channel's collection.
type channelSub struct {
	ch        *channel
	pattern   broker.Pattern
	broadcast bool
	// Binding filters the broker's pattern cannot express.
	changeType string // "INSERT", "UPDATE", "DELETE"; "" for every one
	schema     string // a binding without table: every table of schema
	// sel, when set, is the binding's select: its payload is encoded for
	// it alone instead of shared.
	sel       map[string]bool
	pre, post []byte // the frame around the shared payload
}

var _ broker.Subscriber = (*channelSub)(nil)

// wants reports whether ev goes to this subscriber (before the rules).
func (sub *channelSub) wants(ev *broker.Event) bool {
	if sub.broadcast {
		return ev.Kind == broker.KindCustom && (sub.ch.self || !sub.ch.isOwn(ev))
	}
	if ev.Kind != broker.KindRecord {
		return false
	}
	t := phoenix.ChangeType(ev.Action)
	if t == "" || (sub.changeType != "" && t != sub.changeType) {
		return false
	}
	if sub.schema != "" {
		if schema, _ := phoenix.SchemaTable(ev.Collection); schema != sub.schema {
			return false
		}
	}
	return true
}

// Deliver implements broker.Subscriber. It never blocks.
func (sub *channelSub) Deliver(ev *broker.Event) {
	c := sub.ch.p.c
	if !sub.wants(ev) || !c.s.allow(c.ident.Load(), ev) {
		return
	}
	c.enqueue(item{ev: ev, fr: sub})
}

// DeliverBatch implements broker.Subscriber.
func (sub *channelSub) DeliverBatch(evs []*broker.Event) {
	c := sub.ch.p.c
	id := c.ident.Load()
	out := make([]*broker.Event, 0, len(evs))
	for _, ev := range evs {
		if sub.wants(ev) && c.s.allow(id, ev) {
			out = append(out, ev)
		}
	}
	if len(out) > 0 {
		c.enqueue(item{evs: out, fr: sub})
	}
}

// appendFrame implements framer: the subscriber's frame around the
// event's shared payload (encoded once per event).
func (sub *channelSub) appendFrame(b []byte, ev *broker.Event) []byte {
	b = append(b, sub.pre...)
	if sub.sel != nil {
		b = append(b, phoenix.ChangeDataSelect(ev, sub.sel)...)
	} else {
		b = append(b, ev.AltEncoding(phoenixData)...)
	}
	return append(b, sub.post...)
}
