package broker

// Evaluation of parsed column filters (filter.go) on an event's typed
// values: numbers as exact decimals, everything else as text, without
// allocating for the usual column types.

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Match reports whether ev passes every filter (PROTOCOL section 2):
// create and update are matched on the new row, delete on the logged old
// row, custom events on their data object; truncate always matches.
func (fs *Filters) Match(ev *Event) bool {
	if fs == nil {
		return true
	}
	row, all := filterRow(ev)
	if all {
		return true
	}
	if ev.Kind == KindCustom {
		row = DataRow(ev.Data)
	}
	return fs.matchRow(row)
}

// filterRow is the row filters are evaluated on; all is true for events
// that every filter matches (truncate). For custom events the row is nil:
// the caller parses Data (once per event) with DataRow.
func filterRow(ev *Event) (row Row, all bool) {
	switch {
	case ev.Kind == KindCustom:
		return nil, false
	case ev.Action == ActionTruncate:
		return nil, true
	case ev.Action == ActionDelete && ev.Record == nil:
		return ev.OldRecord, false
	}
	return ev.Record, false
}

// matchRow reports whether row passes every filter.
func (fs *Filters) matchRow(row Row) bool {
	for i := range fs.List {
		v, ok := row.Get(fs.List[i].Column)
		if !ok || !fs.List[i].match(v) {
			return false
		}
	}
	return true
}

// match reports whether value v passes f. NULL passes only is.null; a
// number compares as a number (never matching a value that is not one),
// anything else as text (byte order).
func (f *Filter) match(v any) bool {
	switch f.Op {
	case OpIsNull:
		return v == nil
	case OpIsTrue:
		b, ok := v.(bool)
		return ok && b
	case OpIsFalse:
		b, ok := v.(bool)
		return ok && !b
	}
	var buf [64]byte
	num, text, kind := scalar(v, buf[:0])
	switch kind {
	case kindNum:
		for i := range f.Values {
			l := &f.Values[i]
			if l.Num == "" {
				continue
			}
			if c := compareDecimal(num, l.Num); f.Op == OpIn && c == 0 || f.Op != OpIn && holds(f.Op, c) {
				return true
			}
		}
	case kindText:
		for i := range f.Values {
			if c := strings.Compare(text, f.Values[i].Text); f.Op == OpIn && c == 0 || f.Op != OpIn && holds(f.Op, c) {
				return true
			}
		}
	}
	return false
}

func holds(op Op, c int) bool {
	switch op {
	case OpEq:
		return c == 0
	case OpNeq:
		return c != 0
	case OpLt:
		return c < 0
	case OpLte:
		return c <= 0
	case OpGt:
		return c > 0
	case OpGte:
		return c >= 0
	}
	return false
}

type scalarKind uint8

const (
	kindNone scalarKind = iota // null, arrays, anything not comparable
	kindNum
	kindText
)

// scalar classifies a column value: a number (canonical decimal appended to
// buf) or a text. It does not allocate for the usual column types.
func scalar(v any, buf []byte) (num []byte, text string, kind scalarKind) {
	switch x := v.(type) {
	case string:
		return nil, x, kindText
	case int64:
		return strconv.AppendInt(buf, x, 10), "", kindNum
	case int32:
		return strconv.AppendInt(buf, int64(x), 10), "", kindNum
	case int:
		return strconv.AppendInt(buf, int64(x), 10), "", kindNum
	case float64:
		if n, ok := canonNumber(buf, strconv.AppendFloat(buf, x, 'f', -1, 64)); ok {
			return n, "", kindNum
		}
	case json.Number:
		if n, ok := canonNumber(buf, string(x)); ok {
			return n, "", kindNum
		}
		return nil, string(x), kindText
	case bool:
		if x {
			return nil, "true", kindText
		}
		return nil, "false", kindText
	case json.RawMessage:
		return nil, jsonText(x), kindText
	}
	return nil, "", kindNone
}

// jsonText is a json/jsonb value as filters compare it: without
// insignificant whitespace, whatever the source wrote. Postgres writes jsonb
// as {"k": 1}; a record's JSON encoding (what subscribers see) has {"k":1},
// and so does the filter a user copies from it.
func jsonText(b []byte) string {
	if !bytes.ContainsAny(b, " \t\r\n") {
		return string(b)
	}
	var c bytes.Buffer
	if json.Compact(&c, b) != nil {
		return string(b)
	}
	return c.String()
}

// canonNumber appends the canonical decimal form of s to dst: optional
// "-", the integer part without leading zeros, and the fraction without
// trailing zeros ("-0012.50" → "-12.5", "1e3" → "1000"). ok is false when
// s is not a finite decimal number. dst and s may share storage only when
// s starts at dst's length.
func canonNumber[T string | []byte](dst []byte, s T) ([]byte, bool) {
	if len(s) == 0 {
		return dst, false
	}
	i := 0
	neg := false
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		i++
	}
	intStart := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intEnd := i
	fracStart, fracEnd := i, i
	if i < len(s) && s[i] == '.' {
		i++
		fracStart = i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		fracEnd = i
	}
	if intEnd == intStart && fracEnd == fracStart {
		return dst, false // no digit
	}
	if i < len(s) {
		if s[i] != 'e' && s[i] != 'E' {
			return dst, false
		}
		// Exponent: rare (JSON numbers in custom data, literals).
		f, err := strconv.ParseFloat(string(s), 64)
		if err != nil || f != f || f > 1e300 || f < -1e300 {
			return dst, false
		}
		start := len(dst)
		dst = strconv.AppendFloat(dst, f, 'f', -1, 64)
		tmp := string(dst[start:])
		return canonNumber(dst[:start], tmp)
	}
	for intStart < intEnd && s[intStart] == '0' {
		intStart++
	}
	for fracEnd > fracStart && s[fracEnd-1] == '0' {
		fracEnd--
	}
	// When s aliases dst (an AppendFloat result written at dst's length)
	// the output never overtakes the input: it only drops characters.
	if neg && (intEnd > intStart || fracEnd > fracStart) {
		dst = append(dst, '-')
	}
	if intEnd == intStart {
		dst = append(dst, '0')
	} else {
		dst = append(dst, s[intStart:intEnd]...)
	}
	if fracEnd > fracStart {
		dst = append(dst, '.')
		dst = append(dst, s[fracStart:fracEnd]...)
	}
	return dst, true
}

// compareDecimal compares two canonical decimals (canonNumber output).
func compareDecimal[A, B string | []byte](a A, b B) int {
	an, bn := len(a) > 0 && a[0] == '-', len(b) > 0 && b[0] == '-'
	switch {
	case an && !bn:
		return -1
	case !an && bn:
		return 1
	case an:
		return -compareMagnitude(a[1:], b[1:])
	}
	return compareMagnitude(a, b)
}

func compareMagnitude[A, B string | []byte](a A, b B) int {
	ai, bi := intLen(a), intLen(b)
	if ai != bi { // no leading zeros: the longer integer part is larger
		if ai < bi {
			return -1
		}
		return 1
	}
	// Same integer length: byte order of the whole text is numeric order
	// ('.' sorts before every digit; fractions carry no trailing zeros).
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// intLen is the length of a decimal's integer part.
func intLen[T string | []byte](s T) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return i
		}
	}
	return len(s)
}

// DataRow returns a custom event's data object as a row (top-level keys;
// strings, numbers as json.Number, bools and nulls typed, nested values
// as json.RawMessage), for filters. Data that is not an object gives nil.
func DataRow(data json.RawMessage) Row {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return nil
	}
	row := make(Row, 0, len(obj))
	for k, raw := range obj {
		var v any = raw
		switch raw[0] {
		case '"':
			var s string
			if json.Unmarshal(raw, &s) == nil {
				v = s
			}
		case 't':
			v = true
		case 'f':
			v = false
		case 'n':
			v = nil
		case '{', '[':
		default:
			v = json.Number(raw)
		}
		row = append(row, Column{Name: k, Value: v})
	}
	return row
}
