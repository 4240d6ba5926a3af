package broker

import (
	"errors"
	"strings"
	"unicode"
)

// MaxPatternLen is the longest topic pattern accepted, in bytes.
const MaxPatternLen = 256

// Pattern is a parsed topic pattern (PROTOCOL section 2). Compare patterns
// by String: two parses of one filtered topic carry different Filters
// pointers.
type Pattern struct {
	// All is the "*" pattern: every event of every collection.
	All bool
	// Collection is set unless All.
	Collection string
	// ID is the record id; empty for a collection-level pattern.
	ID string
	// Filters, when not nil, are column filters every matching event must
	// pass (the part after "?").
	Filters *Filters
}

// ErrInvalidTopic is wrapped by ParsePattern errors.
var ErrInvalidTopic = errors.New("invalid topic")

// ParsePattern parses "*", "posts", "posts.*" or "posts.123" (everything
// after the first '.' is the id), optionally followed by "?" and column
// filters ("posts.*?user_id=eq.ann", also on a record pattern:
// "posts.123?status=eq.draft"). The first "?" always starts the filters,
// so a record id containing "?" cannot be named by a record pattern (use
// a filter on the key column instead). "*" takes no filters.
func ParsePattern(s string) (Pattern, error) {
	if len(s) > MaxPatternLen {
		return Pattern{}, topicErr("topic is longer than 256 bytes")
	}
	if strings.TrimSpace(s) != s {
		return Pattern{}, topicErr("topic starts or ends with whitespace")
	}
	s, filter, hasFilter := strings.Cut(s, "?")
	switch {
	case s == "" && hasFilter:
		return Pattern{}, topicErr(`topic has no collection before "?"`)
	case s == "":
		return Pattern{}, topicErr("topic is empty")
	case strings.IndexFunc(s, unicode.IsSpace) >= 0:
		return Pattern{}, topicErr("topic contains whitespace")
	case s == "*" && hasFilter:
		return Pattern{}, topicErr(`"*" takes no filters: put them on a collection, e.g. "posts.*?user_id=eq.ann"`)
	case s == "*":
		return Pattern{All: true}, nil
	}
	coll, id, hasDot := strings.Cut(s, ".")
	switch {
	case coll == "":
		return Pattern{}, topicErr(`topic has no collection before "."`)
	case strings.Contains(coll, "*"):
		return Pattern{}, topicErr(`"*" is only valid alone or as "<collection>.*"`)
	case hasDot && id == "":
		return Pattern{}, topicErr(`topic ends with "."; use "<collection>" or "<collection>.*" for the whole collection`)
	case id == "*":
		id = ""
	}
	p := Pattern{Collection: coll, ID: id}
	if hasFilter {
		fs, err := ParseFilters(filter)
		if err != nil {
			return Pattern{}, err
		}
		p.Filters = fs
	}
	return p, nil
}

func topicErr(msg string) error { return &topicError{msg} }

type topicError struct{ msg string }

func (e *topicError) Error() string { return e.msg }
func (e *topicError) Unwrap() error { return ErrInvalidTopic }

// String returns the canonical form: "*", "posts.*" or "posts.123",
// followed by "?" and the filters as written, if any ("posts" and
// "posts.*" are one pattern; filters are not reordered).
func (p Pattern) String() string {
	var s string
	switch {
	case p.All:
		s = "*"
	case p.ID == "":
		s = p.Collection + ".*"
	default:
		s = p.Collection + "." + p.ID
	}
	if p.Filters != nil {
		s += "?" + p.Filters.Text
	}
	return s
}
