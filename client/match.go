package client

import (
	"bytes"
	"encoding/json"
	"math/big"
	"strings"
)

// topic is a subscribed pattern as the client routes by it. The server does
// the real matching (rules, filters, key changes); a connection gets each
// event once, so the client only decides which of its subscriptions an
// event belongs to.
type topic struct {
	all        bool
	collection string
	id         string // empty: the whole collection
	filters    []filter
}

type filter struct {
	column, op string
	values     []string // one value, or the list of in.(…)
}

func parseTopic(s string) topic {
	if s == "*" {
		return topic{all: true}
	}
	base, query, _ := strings.Cut(s, "?")
	coll, id, _ := strings.Cut(base, ".")
	if id == "*" {
		id = ""
	}
	t := topic{collection: coll, id: id}
	for query != "" {
		var f filter
		var ok bool
		f, query, ok = parseFilter(query)
		if !ok {
			break // the server refused it with invalid_topic already
		}
		t.filters = append(t.filters, f)
	}
	return t
}

// parseFilter parses "col=op.value" or "col=in.(…)" at the start of s and
// returns the rest after its "&".
func parseFilter(s string) (filter, string, bool) {
	col, s, ok := strings.Cut(s, "=")
	if !ok {
		return filter{}, "", false
	}
	op, s, ok := strings.Cut(s, ".")
	if !ok {
		return filter{}, "", false
	}
	f := filter{column: col, op: op}
	if op != "in" {
		v, rest, _ := strings.Cut(s, "&")
		f.values = []string{v}
		return f, rest, true
	}
	// (a,"b,c",d): quoted values may hold , ) & and \" escapes.
	if !strings.HasPrefix(s, "(") {
		return filter{}, "", false
	}
	s = s[1:]
	for s != "" {
		var v strings.Builder
		if s[0] == '"' {
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
			}
			s = s[min(i+1, len(s)):]
		} else {
			i := strings.IndexAny(s, ",)")
			if i < 0 {
				return filter{}, "", false
			}
			v.WriteString(s[:i])
			s = s[i:]
		}
		f.values = append(f.values, v.String())
		if s == "" {
			return filter{}, "", false
		}
		if s[0] == ')' {
			_, rest, _ := strings.Cut(s[1:], "&")
			return f, rest, true
		}
		s = s[1:] // ','
	}
	return filter{}, "", false
}

// matches reports whether ev belongs to t: same collection (and record id),
// and every filter holds on the event's row (or custom data).
func (t topic) matches(ev *Event) bool {
	if t.all {
		return true
	}
	if t.collection != ev.Collection {
		return false
	}
	if t.id != "" && t.id != ev.RecordID {
		return false
	}
	if len(t.filters) == 0 || ev.Action == "truncate" {
		return true
	}
	row := ev.Record
	if ev.Type == TypeCustom {
		row = ev.Data
	}
	var cols map[string]json.RawMessage
	if json.Unmarshal(row, &cols) != nil {
		return false
	}
	for _, f := range t.filters {
		if !f.holds(cols[f.column]) {
			return false
		}
	}
	return true
}

func (f filter) holds(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	switch f.op {
	case "is":
		switch f.values[0] {
		case "null":
			return string(raw) == "null"
		case "true", "false":
			return string(raw) == f.values[0]
		}
		return false
	case "in":
		for _, v := range f.values {
			if c, ok := compare(raw, v); ok && raw != nil && c == 0 {
				return true
			}
		}
		return false
	}
	if raw == nil || string(raw) == "null" {
		return false
	}
	c, ok := compare(raw, f.values[0])
	if !ok {
		return false
	}
	switch f.op {
	case "eq":
		return c == 0
	case "neq":
		return c != 0
	case "lt":
		return c < 0
	case "lte":
		return c <= 0
	case "gt":
		return c > 0
	case "gte":
		return c >= 0
	}
	return false
}

// compare compares a JSON value with a filter value as the server does:
// as exact decimals when the JSON value is a number (a filter value that is
// not a number then never matches: ok is false), else as text.
func compare(raw json.RawMessage, v string) (int, bool) {
	if len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		a, okA := new(big.Rat).SetString(string(raw))
		b, okB := new(big.Rat).SetString(v)
		if !okA || !okB {
			return 0, false
		}
		return a.Cmp(b), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw) // true, false, json objects
		var c bytes.Buffer
		if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') && json.Compact(&c, raw) == nil {
			s = c.String() // as the server compares them: {"a":1}, not {"a": 1}
		}
	}
	return strings.Compare(s, v), true
}
