package broker

// This file indexes the filtered subscriptions of one topic key (a
// collection, or a record of it) so that matching an event costs about the
// same whatever the number of subscribers whose filter does not match it:
// a subscription is found through the filter indexFilter picks: an eq or
// in filter by the event's value of that column (one map lookup per
// indexed column), a range filter by binary search (filterrange.go); only
// subscriptions with neither (neq and is filters alone) are scanned.

// filtered is one filtered subscription: a member and the filters of one
// of its patterns.
type filtered struct {
	mb *member
	f  *Filters
}

type filteredSet map[filtered]struct{}

// filterGroup holds the filtered subscriptions of one topic key.
type filterGroup struct {
	all    filteredSet            // every subscription (truncate matches them all)
	scan   filteredSet            // those without an eq, in or range filter
	cols   map[string]*valueIndex // by the column of their eq or in index filter
	ranges map[string]*rangeIndex // by the column of their range index filter
}

// valueIndex maps a column's value to the subscriptions whose eq or in
// filter names it: by text, and by canonical decimal for number literals
// (an event value that is a number is looked up in num, any other in text).
type valueIndex struct {
	text map[string]filteredSet
	num  map[string]filteredSet
}

func newFilterGroup() *filterGroup {
	return &filterGroup{all: filteredSet{}, scan: filteredSet{}, cols: map[string]*valueIndex{}, ranges: map[string]*rangeIndex{}}
}

func (g *filterGroup) empty() bool { return len(g.all) == 0 }

func (g *filterGroup) add(s filtered) {
	g.all[s] = struct{}{}
	if s.f.index < 0 {
		g.scan[s] = struct{}{}
		return
	}
	f := &s.f.List[s.f.index]
	if isRange(f.Op) {
		ri := g.ranges[f.Column]
		if ri == nil {
			ri = &rangeIndex{}
			g.ranges[f.Column] = ri
		}
		ri.add(f, s)
		return
	}
	vi := g.cols[f.Column]
	if vi == nil {
		vi = &valueIndex{text: map[string]filteredSet{}, num: map[string]filteredSet{}}
		g.cols[f.Column] = vi
	}
	for _, l := range f.Values {
		addTo(vi.text, l.Text, s)
		if l.Num != "" {
			addTo(vi.num, l.Num, s)
		}
	}
}

func (g *filterGroup) remove(s filtered) {
	delete(g.all, s)
	if s.f.index < 0 {
		delete(g.scan, s)
		return
	}
	f := &s.f.List[s.f.index]
	if isRange(f.Op) {
		if ri := g.ranges[f.Column]; ri != nil {
			if ri.remove(f, s); ri.n == 0 {
				delete(g.ranges, f.Column)
			}
		}
		return
	}
	vi := g.cols[f.Column]
	if vi == nil {
		return
	}
	for _, l := range f.Values {
		removeFrom(vi.text, l.Text, s)
		if l.Num != "" {
			removeFrom(vi.num, l.Num, s)
		}
	}
	if len(vi.text) == 0 && len(vi.num) == 0 {
		delete(g.cols, f.Column)
	}
}

func addTo(m map[string]filteredSet, k string, s filtered) {
	set := m[k]
	if set == nil {
		set = filteredSet{}
		m[k] = set
	}
	set[s] = struct{}{}
}

func removeFrom(m map[string]filteredSet, k string, s filtered) {
	if set := m[k]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// eventRow is an event's row for filters, computed on first use (custom
// events parse their data once per event, not once per subscriber).
type eventRow struct {
	ev   *Event
	row  Row
	all  bool
	done bool
}

func (r *eventRow) get() (Row, bool) {
	if !r.done {
		r.row, r.all = filterRow(r.ev)
		if r.ev.Kind == KindCustom {
			r.row = DataRow(r.ev.Data)
		}
		r.done = true
	}
	return r.row, r.all
}

// matchFilteredLocked hands the event to every subscription of g whose
// filters it passes (hitLocked skips members that already have it).
func (h *Hub) matchFilteredLocked(g *filterGroup, er *eventRow, seq, batch uint64) {
	row, all := er.get()
	if all {
		for s := range g.all {
			h.hitLocked(s.mb, er.ev, seq, batch)
		}
		return
	}
	for s := range g.scan {
		if s.mb.lastSeq != seq && s.f.matchRow(row) {
			h.hitLocked(s.mb, er.ev, seq, batch)
		}
	}
	for col, vi := range g.cols {
		v, ok := row.Get(col)
		if !ok {
			continue
		}
		var buf [64]byte
		var set filteredSet
		switch num, text, kind := scalar(v, buf[:0]); kind {
		case kindNum:
			set = vi.num[string(num)]
		case kindText:
			set = vi.text[text]
		}
		for s := range set {
			if s.mb.lastSeq != seq && s.f.matchRow(row) {
				h.hitLocked(s.mb, er.ev, seq, batch)
			}
		}
	}
	for col, ri := range g.ranges {
		v, ok := row.Get(col)
		if !ok {
			continue
		}
		var buf [64]byte
		num, text, kind := scalar(v, buf[:0])
		for i := range ri.num {
			var l []rangeEntry
			var lower, upper int
			switch kind {
			case kindNum:
				l = ri.num[i]
				lower, upper = boundNum(l, num, false), boundNum(l, num, true)
			case kindText:
				l = ri.text[i]
				lower, upper = bound(l, text, compareText, false), bound(l, text, compareText, true)
			}
			for _, e := range passing(Op(i)+OpLt, l, lower, upper) {
				if s := e.s; s.mb.lastSeq != seq && s.f.matchRow(row) {
					h.hitLocked(s.mb, er.ev, seq, batch)
				}
			}
		}
	}
}

// keyMatches reports whether an event falls under topic key k (before
// filters).
func keyMatches(k topicKey, ev *Event) bool {
	if k == (topicKey{}) {
		return true
	}
	return k.coll == ev.Collection && (k.id == "" || k.id == ev.RecordID || k.id == ev.OldRecordID)
}
