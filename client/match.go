package client

import (
	"bytes"
	"encoding/json"
	"strconv"
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
	if query != "" {
		for _, part := range strings.Split(query, "&") {
			col, rest, _ := strings.Cut(part, "=")
			op, val, _ := strings.Cut(rest, ".")
			f := filter{column: col, op: op}
			if op == "in" {
				f.values = splitList(val)
			} else {
				f.values = []string{val}
			}
			t.filters = append(t.filters, f)
		}
	}
	return t
}

// splitList splits "(a,"b,c",d)" into its values.
func splitList(s string) []string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "("), ")")
	var out []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
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
			if raw != nil && compare(raw, v) == 0 {
				return true
			}
		}
		return false
	}
	if raw == nil || string(raw) == "null" {
		return false
	}
	c := compare(raw, f.values[0])
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

// compare compares a JSON value with a filter value: as numbers when the
// JSON value is a number (and v parses as one), else as text.
func compare(raw json.RawMessage, v string) int {
	if len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		a, errA := strconv.ParseFloat(string(raw), 64)
		b, errB := strconv.ParseFloat(v, 64)
		if errA == nil && errB == nil {
			switch {
			case a < b:
				return -1
			case a > b:
				return 1
			}
			return 0
		}
		return strings.Compare(string(raw), v)
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(raw)
	}
	return strings.Compare(s, v)
}
