package broker

import (
	"context"
	"errors"
	"fmt"
)

// Subscribe implements Subscriptions.
func (h *Hub) Subscribe(ctx context.Context, sub Subscriber, patterns []Pattern, since *Position) (Position, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if since != nil {
		// Wait for the stream to reach since, and what an earlier run
		// delivered (still catching up after a restart): events up to
		// there are not delivered live again, so they must be replayed.
		for !h.closed && (h.last.Less(*since) || h.last.Less(h.delivered)) {
			if err := h.waitLocked(ctx); err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return Position{}, fmt.Errorf("%w (position %s is ahead of the stream, which reached %s)", ErrHistoryUnavailable, since, h.last)
				}
				return Position{}, err
			}
		}
	}
	if h.closed {
		return Position{}, ErrClosed
	}
	mb := h.members[sub]
	var replay []*Event
	if since != nil {
		if !h.resumableLocked(*since) {
			return Position{}, ErrHistoryUnavailable
		}
		replay = h.replayLocked(mb, patterns, *since)
	}
	if mb == nil {
		mb = &member{sub: sub, patterns: make(patternSet, 0, len(patterns))}
		h.members[sub] = mb
	}
	if len(replay) > 0 {
		sub.DeliverBatch(replay)
	}
	from := h.lastLocked()
	if since != nil {
		from = *since
	}
	for _, p := range patterns {
		k := keyOf(p)
		if mb.patterns.has(k) {
			continue
		}
		mb.patterns = append(mb.patterns, patternFrom{k, p.Filters, from})
		if p.Filters != nil {
			g := h.filtered[k.topicKey]
			if g == nil {
				g = newFilterGroup()
				h.filtered[k.topicKey] = g
			}
			g.add(filtered{mb, p.Filters})
			continue
		}
		set := h.index[k.topicKey]
		if set == nil {
			set = make(map[*member]struct{})
			h.index[k.topicKey] = set
		}
		set[mb] = struct{}{}
	}
	return h.lastLocked(), nil
}

// resumableLocked reports whether every event after since is retained.
func (h *Hub) resumableLocked(since Position) bool {
	if h.baseKnown && !since.Less(h.base) {
		return true
	}
	return h.histLen > 0 && !since.Less(h.historyAt(0).Position)
}

// replayLocked collects retained events after since that match the new
// patterns and that none of the member's existing patterns delivered.
func (h *Hub) replayLocked(mb *member, patterns []Pattern, since Position) []*Event {
	fresh := &member{patterns: make(patternSet, 0, len(patterns))}
	for _, p := range patterns {
		if k := keyOf(p); !fresh.patterns.has(k) {
			fresh.patterns = append(fresh.patterns, patternFrom{k, p.Filters, since})
		}
	}
	// Binary search for the first retained event after since.
	lo, hi := 0, h.histLen
	for lo < hi {
		mid := (lo + hi) / 2
		if h.historyAt(mid).Position.Compare(since) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	var out []*Event
	for i := lo; i < h.histLen; i++ {
		ev := h.historyAt(i)
		if fresh.matches(ev) && (mb == nil || !mb.delivered(ev)) && h.encodeLocked(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// Unsubscribe implements Subscriptions.
func (h *Hub) Unsubscribe(sub Subscriber, patterns []Pattern) {
	h.mu.Lock()
	defer h.mu.Unlock()
	mb := h.members[sub]
	if mb == nil {
		return
	}
	for _, p := range patterns {
		h.dropLocked(mb, keyOf(p))
	}
	if len(mb.patterns) == 0 {
		delete(h.members, sub)
	}
}

func (h *Hub) dropLocked(mb *member, k subKey) {
	i := mb.patterns.find(k)
	if i < 0 {
		return
	}
	f := mb.patterns[i].f
	mb.patterns = mb.patterns.without(k)
	if f != nil {
		if g := h.filtered[k.topicKey]; g != nil {
			g.remove(filtered{mb, f})
			if g.empty() {
				delete(h.filtered, k.topicKey)
			}
		}
		return
	}
	if set := h.index[k.topicKey]; set != nil {
		delete(set, mb)
		if len(set) == 0 {
			delete(h.index, k.topicKey)
		}
	}
}

// Remove implements Subscriptions.
func (h *Hub) Remove(sub Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	mb := h.members[sub]
	if mb == nil {
		return
	}
	for len(mb.patterns) > 0 {
		h.dropLocked(mb, mb.patterns[0].key)
	}
	delete(h.members, sub)
}
