package wsapi

import (
	"strconv"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
)

// Delivery to the Supabase endpoint's subscribers: filtering, then the
// frame around the event's shared payload.

// channelSub is one broker subscriber of a channel: its postgres_changes
// bindings (those with the same select), or (broadcast) the custom events
// of the channel's collection. The broker delivers an event once per
// subscriber, so a change that several bindings match is one message
// listing their ids, in commit order, as Supabase sends it.
type channelSub struct {
	ch        *channel
	broadcast bool
	bindings  []binding
	patterns  []broker.Pattern // what the subscriber is subscribed to
	// sel, when set, is the bindings' select: their payload is encoded
	// for this subscriber alone instead of shared.
	sel map[string]bool
	// The frame: pre + payload + post for a broadcast; pre + ids +
	// `],"data":` + data + post for a change.
	pre, post []byte
}

var _ broker.Subscriber = (*channelSub)(nil)

// binding is one postgres_changes binding of a channel.
type binding struct {
	id         uint32
	changeType string         // "INSERT", "UPDATE", "DELETE"; "" for every one
	schema     string         // a binding without table: every table of schema
	pattern    broker.Pattern // otherwise: the table, with its filter
}

// matches reports whether the change ev, of postgres_changes type t, is
// one of the binding's.
func (b *binding) matches(ev *broker.Event, t string) bool {
	if b.changeType != "" && t != b.changeType {
		return false
	}
	if b.schema != "" {
		schema, _ := phoenix.SchemaTable(ev.Collection)
		return schema == b.schema
	}
	return ev.Collection == b.pattern.Collection && b.pattern.Filters.Match(ev)
}

// wants reports whether ev goes to this subscriber (before the rules).
func (sub *channelSub) wants(ev *broker.Event) bool {
	if sub.broadcast {
		return ev.Kind == broker.KindCustom && (sub.ch.self || !sub.ch.isOwn(ev))
	}
	if ev.Kind != broker.KindRecord {
		return false
	}
	t := phoenix.ChangeType(ev.Action)
	if t == "" {
		return false
	}
	for i := range sub.bindings {
		if sub.bindings[i].matches(ev, t) {
			return true
		}
	}
	return false
}

// Resync implements broker.Subscriber: the whole connection is closed
// with 1001, as conn.Resync (the client rejoins its channels). It never
// blocks.
func (sub *channelSub) Resync() { sub.ch.p.c.Resync() }

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
// event's shared payload (encoded once per event), with the ids of the
// bindings the change matches.
func (sub *channelSub) appendFrame(b []byte, ev *broker.Event) []byte {
	start := len(b)
	b = append(b, sub.pre...)
	if sub.broadcast {
		b = append(b, ev.AltEncoding(phoenixData)...)
		return append(b, sub.post...)
	}
	t := phoenix.ChangeType(ev.Action)
	n := 0
	for i := range sub.bindings {
		if sub.bindings[i].matches(ev, t) {
			if n > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(sub.bindings[i].id), 10)
			n++
		}
	}
	if n == 0 {
		return b[:start]
	}
	b = append(b, `],"data":`...)
	if sub.sel != nil {
		b = append(b, phoenix.ChangeDataSelect(ev, sub.sel)...)
	} else {
		b = append(b, ev.AltEncoding(phoenixData)...)
	}
	return append(b, sub.post...)
}
