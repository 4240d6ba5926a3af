package broker

// This file indexes range filters (lt, lte, gt, gte) of subscriptions
// without an eq or in filter: per column and operator, the literals in
// sorted order, so that the subscriptions an event value passes are a
// prefix or a suffix found by binary search, and the others cost nothing.

// rangeEntry is one subscription in a sorted range list.
type rangeEntry struct {
	key string
	s   filtered
}

// rangeIndex holds one column's range subscriptions by operator: num
// lists are keyed by canonical decimal (looked up with number values),
// text lists by the literal as written (looked up with text values).
type rangeIndex struct {
	num  [4][]rangeEntry // OpLt, OpLte, OpGt, OpGte
	text [4][]rangeEntry
	n    int
}

func isRange(op Op) bool { return op >= OpLt && op <= OpGte }

func (ri *rangeIndex) add(f *Filter, s filtered) {
	l := f.Values[0]
	i := f.Op - OpLt
	ri.text[i] = insertSorted(ri.text[i], rangeEntry{l.Text, s}, compareText)
	if l.Num != "" {
		ri.num[i] = insertSorted(ri.num[i], rangeEntry{l.Num, s}, compareDecimal[string, string])
	}
	ri.n++
}

func (ri *rangeIndex) remove(f *Filter, s filtered) {
	l := f.Values[0]
	i := f.Op - OpLt
	ri.text[i] = removeSorted(ri.text[i], rangeEntry{l.Text, s}, compareText)
	if l.Num != "" {
		ri.num[i] = removeSorted(ri.num[i], rangeEntry{l.Num, s}, compareDecimal[string, string])
	}
	ri.n--
}

func compareText(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// bound returns the first index whose key is >= x (upper: > x), keys
// ordered by cmp.
func bound(list []rangeEntry, x string, cmp func(string, string) int, upper bool) int {
	lo, hi := 0, len(list)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if c := cmp(x, list[mid].key); c > 0 || upper && c == 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// boundNum is bound for a number value and decimal keys (not generic and
// without a func value, so that x, on the caller's stack, stays there).
func boundNum(list []rangeEntry, x []byte, upper bool) int {
	lo, hi := 0, len(list)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if c := compareDecimal(x, list[mid].key); c > 0 || upper && c == 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

func insertSorted(list []rangeEntry, e rangeEntry, cmp func(string, string) int) []rangeEntry {
	i := bound(list, e.key, cmp, true)
	list = append(list, rangeEntry{})
	copy(list[i+1:], list[i:])
	list[i] = e
	return list
}

func removeSorted(list []rangeEntry, e rangeEntry, cmp func(string, string) int) []rangeEntry {
	for i := bound(list, e.key, cmp, false); i < len(list) && list[i].key == e.key; i++ {
		if list[i].s == e.s {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = rangeEntry{}
			return list[:len(list)-1]
		}
	}
	return list
}

// passing returns, for each operator's list, the part that a value
// passes, given the value's bounds in the list (lower: first key >= value,
// upper: first key > value): x < key (lt) and x <= key (lte) are suffixes,
// x > key (gt) and x >= key (gte) prefixes of the sorted list.
func passing(op Op, l []rangeEntry, lower, upper int) []rangeEntry {
	switch op {
	case OpLt:
		return l[upper:]
	case OpLte:
		return l[lower:]
	case OpGt:
		return l[:lower]
	}
	return l[:upper] // OpGte
}
