package broker

import (
	"fmt"
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
	// subscription by (indexFilter); -1 when there is none.
	index int
}

// maxIndexedIn is the longest in-list a subscription is indexed by: each
// value is an index entry, and a topic of 256 bytes could otherwise cost
// a hundred of them.
const maxIndexedIn = 16

// indexFilter picks the filter to index a subscription by: the first eq,
// else the first in with at most maxIndexedIn values, else the first
// range filter (lt, lte, gt, gte), else the first longer in; -1 when
// there is none (only neq and is filters: scanned).
func indexFilter(list []Filter) int {
	for _, pick := range []func(*Filter) bool{
		func(f *Filter) bool { return f.Op == OpEq },
		func(f *Filter) bool { return f.Op == OpIn && len(f.Values) <= maxIndexedIn },
		func(f *Filter) bool { return isRange(f.Op) },
		func(f *Filter) bool { return f.Op == OpIn },
	} {
		for i := range list {
			if pick(&list[i]) {
				return i
			}
		}
	}
	return -1
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
		fs.List = append(fs.List, f)
		if rest == "" {
			fs.index = indexFilter(fs.List)
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
