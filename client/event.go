package client

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Event types.
const (
	TypeRecord = "record_event" // a row changed (PROTOCOL section 4)
	TypeCustom = "custom_event" // an app's event (PROTOCOL section 5)
	// TypeGap: the subscription could not be resumed without a gap (the
	// server answered history_unavailable). Events may have been missed:
	// re-read your data. Events after it are live again.
	TypeGap = "gap"
)

// Event is one event of a subscription, in the order the server sent it.
type Event struct {
	Type       string `json:"type"`
	Collection string `json:"collection"`
	// Action of a record event: create, update, delete or truncate.
	Action   string `json:"action,omitempty"`
	RecordID string `json:"record_id,omitempty"`
	// Record is the row (record events) as JSON.
	Record json.RawMessage `json:"record,omitempty"`
	// OldRecord is the old row or key of an update, when Postgres logged one.
	OldRecord        json.RawMessage `json:"old_record,omitempty"`
	UnchangedColumns []string        `json:"unchanged_columns,omitempty"`
	// Event is the name of a custom event, Data its payload.
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	// Timestamp is the commit time (record events, WAL custom events) or
	// the time the server received a live custom event.
	Timestamp time.Time `json:"timestamp"`
	// Position identifies the event in the stream; empty for live-only
	// custom events (NOTIFY, HTTP), which are not resumed.
	Position string `json:"position,omitempty"`
}

// position is a parsed "<hi>/<lo>:<index>" stream position.
type position struct {
	lsn uint64
	idx uint64
}

// parsePosition parses a position; ok is false for anything else.
func parsePosition(s string) (position, bool) {
	lsnText, idxText, ok := strings.Cut(s, ":")
	if !ok {
		return position{}, false
	}
	hiText, loText, ok := strings.Cut(lsnText, "/")
	if !ok {
		return position{}, false
	}
	hi, err1 := strconv.ParseUint(hiText, 16, 32)
	lo, err2 := strconv.ParseUint(loText, 16, 32)
	idx, err3 := strconv.ParseUint(idxText, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return position{}, false
	}
	return position{lsn: hi<<32 | lo, idx: idx}, true
}

// after reports whether position a comes after b. A position that does not
// parse is taken as new (the server's positions always parse).
func after(a, b string) bool {
	pa, okA := parsePosition(a)
	pb, okB := parsePosition(b)
	if !okA || !okB {
		return true
	}
	if pa.lsn != pb.lsn {
		return pa.lsn > pb.lsn
	}
	return pa.idx > pb.idx
}
