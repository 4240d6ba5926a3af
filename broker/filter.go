package broker

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// MaxFilters is the largest number of column filters one pattern may carry.
const MaxFilters = 8

// Op is a column filter operator.
type Op uint8

// Column filter operators (PostgREST syntax, PROTOCOL section 2).
const (
	OpEq Op = iota + 1
	OpNeq
	OpLt
	OpLte
	OpGt
	OpGte
	OpIn
	OpIsNull
	OpIsTrue
	OpIsFalse
)

var opNames = map[string]Op{"eq": OpEq, "neq": OpNeq, "lt": OpLt, "lte": OpLte, "gt": OpGt, "gte": OpGte, "in": OpIn, "is": OpIsNull}

// Literal is one value of a filter, as written and, when it is a number,
// in canonical decimal form.
type Literal struct {
	// Text is the value as written (quotes of in-list values removed).
	Text string
	// Num is the canonical decimal form ("-12.5") when Text is a number,
	// else empty.
	Num string
}

// Filter is one parsed column filter.
type Filter struct {
	Column string
	Op     Op
	// Values holds one literal for eq … gte, the list of in, none for is.
	Values []Literal
}

// Filters is the parsed filter part of a topic pattern: every filter must
// hold. Filters are immutable once parsed and safe for concurrent use.
type Filters struct {
	// Text is the filter part as written (after the "?"): with the
	// collection part, the subscription's name.
	Text string
	List []Filter
	// index is the position in List of the filter brokers index the
	// subscription by: the first eq or in filter, else the first range
	// filter (lt, lte, gt, gte); -1 when there is neither.
	index int
}

// ParseFilters parses the part of a topic after "?", e.g.
// "status=in.(paid,shipped)&total=gt.100". Errors wrap ErrInvalidTopic and
// say what to change.
func ParseFilters(s string) (*Filters, error) {
	if s == "" {
		return nil, topicErr(`nothing after "?": add a filter such as "user_id=eq.ann", or drop the "?"`)
	}
	fs := &Filters{Text: s, index: -1}
	for n := 1; ; n++ {
		if n > MaxFilters {
			return nil, topicErr(fmt.Sprintf("at most %d filters per topic", MaxFilters))
		}
		f, rest, err := parseFilter(s)
		if err != nil {
			return nil, topicErr(fmt.Sprintf("filter %d (%q): %v", n, filterText(s), err))
		}
		if fs.index < 0 && (f.Op == OpEq || f.Op == OpIn) {
			fs.index = len(fs.List)
		}
		fs.List = append(fs.List, f)
		if rest == "" {
			if fs.index < 0 {
				for i := range fs.List {
					if isRange(fs.List[i].Op) {
						fs.index = i
						break
					}
				}
			}
			return fs, nil
		}
		s = rest[1:] // skip '&'
		if s == "" {
			return nil, topicErr(`topic ends with "&": add a filter after it or drop it`)
		}
	}
}

// filterText is the filter at the start of s, for error messages.
func filterText(s string) string {
	if i := strings.IndexByte(s, '&'); i >= 0 && !strings.Contains(s[:i], "in.(") {
		return s[:i]
	}
	return s
}

// parseFilter parses one filter at the start of s; rest is "" or starts
// with '&'.
func parseFilter(s string) (f Filter, rest string, err error) {
	eq := strings.IndexAny(s, "=&")
	if eq < 0 || s[eq] != '=' {
		return f, "", fmt.Errorf(`no "=": write <column>=<operator>.<value>, e.g. user_id=eq.ann`)
	}
	f.Column = s[:eq]
	if f.Column == "" {
		return f, "", fmt.Errorf(`no column name before "="`)
	}
	if i := strings.IndexFunc(f.Column, isSpaceOrControl); i >= 0 {
		return f, "", fmt.Errorf("column name %q contains whitespace or a control character", f.Column)
	}
	s = s[eq+1:]
	end := strings.IndexAny(s, ".&")
	if end < 0 || s[end] != '.' {
		opText := s
		if end >= 0 {
			opText = s[:end]
		}
		if opText == "" {
			return f, "", fmt.Errorf(`no operator after "=": write %s=<operator>.<value>, e.g. %s=eq.1`, f.Column, f.Column)
		}
		return f, "", fmt.Errorf(`operator %q must be followed by "." and a value, e.g. %s=%s.1`, opText, f.Column, opText)
	}
	op, ok := opNames[s[:end]]
	if !ok {
		return f, "", fmt.Errorf("unknown operator %q: use eq, neq, lt, lte, gt, gte, in or is", s[:end])
	}
	f.Op = op
	s = s[end+1:]
	switch op {
	case OpIn:
		f.Values, rest, err = parseList(s)
		return f, rest, err
	case OpIsNull:
		v, rest := cutAmp(s)
		switch v {
		case "null":
		case "true":
			f.Op = OpIsTrue
		case "false":
			f.Op = OpIsFalse
		default:
			return f, "", fmt.Errorf(`is.%s: "is" takes null, true or false`, v)
		}
		return f, rest, nil
	}
	v, rest := cutAmp(s)
	if strings.IndexFunc(v, isControl) >= 0 {
		return f, "", fmt.Errorf("value contains a control character")
	}
	f.Values = []Literal{literal(v)}
	return f, rest, nil
}

func cutAmp(s string) (v, rest string) {
	if i := strings.IndexByte(s, '&'); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// parseList parses "(a,b,"c,d")" at the start of s.
func parseList(s string) ([]Literal, string, error) {
	if s == "" || s[0] != '(' {
		return nil, "", fmt.Errorf(`in needs a list in parentheses, e.g. in.(paid,shipped)`)
	}
	s = s[1:]
	var out []Literal
	for {
		var v string
		if s != "" && s[0] == '"' {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, "", fmt.Errorf(`in-list value %s has no closing '"'`, s)
			}
			v, s = b.String(), s[i+1:]
		} else {
			i := strings.IndexAny(s, ",)\"")
			if i < 0 {
				return nil, "", fmt.Errorf(`in-list has no closing ")"`)
			}
			if s[i] == '"' {
				return nil, "", fmt.Errorf(`'"' inside an unquoted in-list value: quote the whole value, e.g. in.("a\"b")`)
			}
			v, s = s[:i], s[i:]
			if v == "" {
				return nil, "", fmt.Errorf(`empty value in in-list: write "" for the empty string`)
			}
		}
		if strings.IndexFunc(v, isControl) >= 0 {
			return nil, "", fmt.Errorf("in-list value contains a control character")
		}
		out = append(out, literal(v))
		if s == "" {
			return nil, "", fmt.Errorf(`in-list has no closing ")"`)
		}
		switch s[0] {
		case ',':
			s = s[1:]
			continue
		case ')':
			s = s[1:]
			if s != "" && s[0] != '&' {
				return nil, "", fmt.Errorf(`unexpected %q after the in-list's ")": filters are joined by "&"`, s)
			}
			return out, s, nil
		}
		return nil, "", fmt.Errorf(`expected "," or ")" after in-list value %q; quote values that contain "," or ")"`, v)
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool {
	return isControl(r) || r == ' ' || r == '\u00a0' || r == '\u2028' || r == '\u2029'
}

func literal(s string) Literal {
	l := Literal{Text: s}
	if n, ok := canonNumber(nil, s); ok {
		l.Num = string(n)
	}
	return l
}

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
		return nil, string(x), kindText
	}
	return nil, "", kindNone
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
