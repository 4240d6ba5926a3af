package broker

import "slices"

// patternSet is a member's patterns with their positions: a slice, not a
// map, because most subscribers hold one to three patterns (a map costs
// each idle subscriber several hundred bytes, and a short scan is faster).
type patternSet []patternFrom

type patternFrom struct {
	key  subKey
	f    *Filters // nil for an unfiltered pattern
	from Position
}

// matches reports whether the pattern matches ev (filters included).
func (p *patternFrom) matches(ev *Event, er *eventRow) bool {
	if !keyMatches(p.key.topicKey, ev) {
		return false
	}
	if p.f == nil {
		return true
	}
	row, all := er.get()
	return all || p.f.matchRow(row)
}

func (ps patternSet) get(k subKey) (Position, bool) {
	for i := range ps {
		if ps[i].key == k {
			return ps[i].from, true
		}
	}
	return Position{}, false
}

func (ps patternSet) has(k subKey) bool {
	_, ok := ps.get(k)
	return ok
}

func (ps patternSet) find(k subKey) int {
	for i := range ps {
		if ps[i].key == k {
			return i
		}
	}
	return -1
}

func (ps patternSet) without(k subKey) patternSet {
	for i := range ps {
		if ps[i].key == k {
			return slices.Delete(ps, i, i+1)
		}
	}
	return ps
}

// member is one subscriber's state.
type member struct {
	sub Subscriber
	// patterns maps each pattern to the position after which it delivers
	// (the since it was replayed from, or the last position when it was
	// added live), so that a later resume replays exactly what no existing
	// pattern delivered.
	patterns patternSet
	lastSeq  uint64
	batchSeq uint64   // transaction batch being collected in batch
	batch    []*Event // events of the current multi-event transaction
}

// topicKey indexes subscriptions: {"",""} is "*", {c,""} a collection,
// {c,id} a record.
type topicKey struct{ coll, id string }

// subKey identifies a pattern: its topic key and its filters as written.
type subKey struct {
	topicKey
	filter string
}

func keyOf(p Pattern) subKey {
	k := subKey{}
	if !p.All {
		k.topicKey = topicKey{p.Collection, p.ID}
	}
	if p.Filters != nil {
		k.filter = p.Filters.Text
	}
	return k
}

// eventKeys returns the index keys an event matches, in a fixed array.
func eventKeys(ev *Event) ([4]topicKey, int) {
	var keys [4]topicKey
	keys[0] = topicKey{}
	keys[1] = topicKey{coll: ev.Collection}
	n := 2
	if ev.RecordID != "" {
		keys[n] = topicKey{ev.Collection, ev.RecordID}
		n++
	}
	if ev.OldRecordID != "" && ev.OldRecordID != ev.RecordID {
		keys[n] = topicKey{ev.Collection, ev.OldRecordID}
		n++
	}
	return keys, n
}

// fanoutLocked hands ev to every member with a matching pattern, once each.
func (h *Hub) fanoutLocked(ev *Event) {
	h.seq++
	h.matchLocked(ev, h.seq, 0)
}

// matchLocked hands ev to every member with a matching pattern that does
// not have it yet (hitLocked): a few map lookups for the unfiltered
// patterns, and the filter index of each topic key.
func (h *Hub) matchLocked(ev *Event, seq, batch uint64) {
	keys, n := eventKeys(ev)
	er := eventRow{ev: ev}
	for i := 0; i < n; i++ {
		for mb := range h.index[keys[i]] {
			h.hitLocked(mb, ev, seq, batch)
		}
		if g := h.filtered[keys[i]]; g != nil {
			h.matchFilteredLocked(g, &er, seq, batch)
		}
	}
}

// hitLocked delivers ev to mb (batch 0) or adds it to mb's batch, unless
// mb already has event seq.
func (h *Hub) hitLocked(mb *member, ev *Event, seq, batch uint64) {
	if mb.lastSeq == seq {
		return
	}
	mb.lastSeq = seq
	if !h.encodeLocked(ev) {
		return
	}
	if batch == 0 {
		mb.sub.Deliver(ev)
		return
	}
	if mb.batchSeq != batch {
		mb.batchSeq = batch
		mb.batch = nil
		h.touched = append(h.touched, mb)
	}
	mb.batch = append(mb.batch, ev)
}

// fanoutBatchLocked hands each member the events of one transaction that
// it matches as a single batch, so that a large transaction takes one slot
// of a subscriber's queue instead of one per row.
func (h *Hub) fanoutBatchLocked(evs []*Event) {
	h.batchSeq++
	batch := h.batchSeq
	h.touched = h.touched[:0]
	for _, ev := range evs {
		h.seq++
		h.matchLocked(ev, h.seq, batch)
	}
	touched := h.touched
	for i, mb := range touched {
		b := mb.batch
		mb.batch = nil
		touched[i] = nil
		if len(b) == 1 {
			mb.sub.Deliver(b[0])
		} else {
			mb.sub.DeliverBatch(b)
		}
	}
	h.touched = touched[:0]
}

func (mb *member) matches(ev *Event) bool {
	er := eventRow{ev: ev}
	for i := range mb.patterns {
		if mb.patterns[i].matches(ev, &er) {
			return true
		}
	}
	return false
}

// delivered reports whether one of mb's patterns has delivered ev (it
// matches ev and was in place before ev).
func (mb *member) delivered(ev *Event) bool {
	er := eventRow{ev: ev}
	for i := range mb.patterns {
		if p := &mb.patterns[i]; p.from.Less(ev.Position) && p.matches(ev, &er) {
			return true
		}
	}
	return false
}
