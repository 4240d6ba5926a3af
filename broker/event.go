package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Position identifies an event in the WAL: the commit LSN of its transaction
// and the 1-based index of the event within that transaction. Its text form is
// "<LSN>:<index>", e.g. "0/16B3748:2". Positions increase strictly in delivery
// order. The zero Position means "none" (live-only events, or nothing
// published yet).
type Position struct {
	LSN   uint64
	Index uint32
}

// IsZero reports whether p is the zero Position.
func (p Position) IsZero() bool { return p.LSN == 0 && p.Index == 0 }

// Compare returns -1, 0 or +1 as p is before, equal to or after q.
func (p Position) Compare(q Position) int {
	switch {
	case p.LSN < q.LSN:
		return -1
	case p.LSN > q.LSN:
		return 1
	case p.Index < q.Index:
		return -1
	case p.Index > q.Index:
		return 1
	}
	return 0
}

// Less reports whether p is before q.
func (p Position) Less(q Position) bool { return p.Compare(q) < 0 }

// String formats p as "<hi>/<lo>:<index>" with the LSN in Postgres's
// notation (upper-case hex).
func (p Position) String() string {
	return string(p.AppendText(nil))
}

// AppendText appends the text form of p to b.
func (p Position) AppendText(b []byte) []byte {
	start := len(b)
	b = strconv.AppendUint(b, p.LSN>>32, 16)
	b = append(b, '/')
	b = strconv.AppendUint(b, p.LSN&0xFFFFFFFF, 16)
	upperHex(b[start:])
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(p.Index), 10)
}

// upperHex upper-cases the hex digits of an LSN in place.
func upperHex(b []byte) {
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
}

// ErrBadPosition is returned by ParsePosition for malformed input.
var ErrBadPosition = errors.New(`position must look like "0/16B3748:2"`)

// ParsePosition parses the text form produced by Position.String.
func ParsePosition(s string) (Position, error) {
	lsnPart, idxPart, ok := strings.Cut(s, ":")
	if !ok {
		return Position{}, ErrBadPosition
	}
	hi, lo, ok := strings.Cut(lsnPart, "/")
	if !ok {
		return Position{}, ErrBadPosition
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	i, err3 := strconv.ParseUint(idxPart, 10, 32)
	if err1 != nil || err2 != nil || err3 != nil || hi == "" || lo == "" {
		return Position{}, ErrBadPosition
	}
	return Position{LSN: h<<32 | l, Index: uint32(i)}, nil
}

// MarshalText implements encoding.TextMarshaler.
func (p Position) MarshalText() ([]byte, error) { return p.AppendText(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Position) UnmarshalText(b []byte) error {
	q, err := ParsePosition(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// Kind tells record events from custom events.
type Kind uint8

const (
	// KindRecord is an INSERT, UPDATE, DELETE or TRUNCATE of a published table.
	KindRecord Kind = iota + 1
	// KindCustom is an application event (NOTIFY, pgrealtime.broadcast, HTTP).
	KindCustom
)

// Actions of record events.
const (
	ActionCreate   = "create"
	ActionUpdate   = "update"
	ActionDelete   = "delete"
	ActionTruncate = "truncate"
)

// Column is one named value of a row. Value is one of: nil, bool, int64
// (int and int32 are taken as int64), float64 (finite), string,
// json.Number (numeric with exact digits), json.RawMessage (json/jsonb,
// already valid JSON), or []any of those. That is what cdc produces and
// what the cross-process codec carries (AppendBinary); Row's JSON encoding
// also takes any other value encoding/json can encode, but an event
// holding one cannot cross a process.
type Column struct {
	Name  string
	Value any
}

// Row is a record's columns in table order. It encodes as a JSON object with
// the keys in that order.
type Row []Column

// Get returns the value of column name.
func (r Row) Get(name string) (any, bool) {
	for i := range r {
		if r[i].Name == name {
			return r[i].Value, true
		}
	}
	return nil, false
}

// Without returns r without the named columns. It returns r itself (no copy)
// when none of them is present.
func (r Row) Without(names map[string]struct{}) Row {
	if r == nil || len(names) == 0 {
		return r
	}
	n := 0
	for i := range r {
		if _, drop := names[r[i].Name]; drop {
			n++
		}
	}
	if n == 0 {
		return r
	}
	out := make(Row, 0, len(r)-n)
	for i := range r {
		if _, drop := names[r[i].Name]; !drop {
			out = append(out, r[i])
		}
	}
	return out
}

// Map returns the row as a map (for rule evaluation).
func (r Row) Map() map[string]any {
	m := make(map[string]any, len(r))
	for i := range r {
		m[r[i].Name] = r[i].Value
	}
	return m
}

// MarshalJSON encodes the row as an object, keys in column order.
func (r Row) MarshalJSON() ([]byte, error) {
	if r == nil {
		return []byte("null"), nil
	}
	return r.appendJSON(make([]byte, 0, 64*len(r)+2))
}

func (r Row) appendJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	for i := range r {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, r[i].Name)
		b = append(b, ':')
		var err error
		if b, err = appendValue(b, r[i].Value); err != nil {
			return nil, fmt.Errorf("column %q: %w", r[i].Name, err)
		}
	}
	return append(b, '}'), nil
}

// AppendValue appends the JSON of a column value (see Column) to b, as
// Row's encoding writes it.
func AppendValue(b []byte, v any) ([]byte, error) { return appendValue(b, v) }

func appendValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case string:
		return appendString(b, x), nil
	case json.Number:
		return append(b, x...), nil
	case json.RawMessage:
		return append(b, x...), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	default:
		// float64 and everything else: encoding/json's rules.
		enc, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		return append(b, enc...), nil
	}
}

func appendString(b []byte, s string) []byte {
	// Fast path for strings that need no escaping.
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s)
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Event is one record or custom event. Events are immutable once handed to a
// Broker: the broker and every subscriber share the same *Event.
type Event struct {
	Kind       Kind
	Collection string
	// Action is create, update, delete or truncate (record events).
	Action string
	// Name is the custom event's name ("event" on the wire).
	Name string
	// RecordID is the text form of the row's key; empty when the table has
	// no key, for truncate, and for custom events without record_id.
	RecordID string
	// OldRecordID is set on an update that changed the key: the old id.
	OldRecordID string
	Record      Row
	OldRecord   Row
	// UnchangedColumns lists TOASTed columns Postgres did not resend.
	UnchangedColumns []string
	// ColumnTypes lists the table's columns with their Postgres type names
	// (record events from the WAL reader; nil otherwise). The slice is
	// shared by every event of the table: never modify it.
	ColumnTypes []ColumnType
	// Data is the custom event's payload (valid JSON), if any.
	Data json.RawMessage
	// Timestamp is the commit time (record events, WAL custom events) or the
	// time the event was received (live custom events).
	Timestamp time.Time
	// Position is zero for live-only events (NOTIFY, HTTP).
	Position Position

	// Meta is per-event state attached by the broker's Prepare hook (rules).
	Meta any
	// JSON is the wire encoding, set once by the broker before fan-out and
	// shared by every recipient. Never modify it.
	JSON []byte

	// alt is a second wire encoding (see AltEncoding).
	alt atomic.Pointer[[]byte]
}

// ColumnType is one column of a table with its Postgres type name as in
// pg_type.typname ("int4", "text", "timestamptz", "_int4" for arrays).
type ColumnType struct {
	Name string
	Type string
	// Key: the column is part of the record id (primary key, or replica
	// identity index).
	Key bool
}

// AltEncoding returns a second wire encoding of the event (the Supabase
// endpoint's), made by enc on first use and then shared by every
// recipient, so that it too is encoded once per event. Concurrent first
// uses may each call enc; one result wins. enc must be a function of the
// event alone.
func (e *Event) AltEncoding(enc func(*Event) []byte) []byte {
	if p := e.alt.Load(); p != nil {
		return *p
	}
	b := enc(e)
	if e.alt.CompareAndSwap(nil, &b) {
		return b
	}
	return *e.alt.Load()
}

// Encode returns the wire JSON of the event (a new slice).
func (e *Event) Encode() ([]byte, error) {
	bp := encodeBufs.Get().(*[]byte)
	b, err := e.appendJSON((*bp)[:0])
	var out []byte
	if err == nil {
		// Exactly its size: a retained event keeps its JSON (the history
		// of a catch-up holds hundreds of thousands), and the scratch
		// buffer is reused instead of becoming new heap.
		out = append([]byte(nil), b...)
	}
	if cap(b) <= maxPooledEncodeBuf {
		*bp = b[:0]
		encodeBufs.Put(bp)
	}
	return out, err
}

// encodeBufs are Encode's scratch buffers; one that grew beyond
// maxPooledEncodeBuf (a huge row) is left to the GC.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledEncodeBuf = 64 << 10

// appendJSON appends the wire JSON of e to b.
func (e *Event) appendJSON(b []byte) ([]byte, error) {
	if e.Kind == KindCustom {
		b = append(b, `{"type":"custom_event","collection":`...)
		b = appendString(b, e.Collection)
		b = append(b, `,"event":`...)
		b = appendString(b, e.Name)
		if e.RecordID != "" {
			b = append(b, `,"record_id":`...)
			b = appendString(b, e.RecordID)
		}
		if len(e.Data) > 0 {
			b = append(b, `,"data":`...)
			b = append(b, compactJSON(e.Data)...)
		}
	} else {
		b = append(b, `{"type":"record_event","collection":`...)
		b = appendString(b, e.Collection)
		b = append(b, `,"action":`...)
		b = appendString(b, e.Action)
		if e.RecordID != "" {
			b = append(b, `,"record_id":`...)
			b = appendString(b, e.RecordID)
		}
		var err error
		if e.Record != nil {
			b = append(b, `,"record":`...)
			if b, err = e.Record.appendJSON(b); err != nil {
				return nil, err
			}
		}
		if e.OldRecord != nil {
			b = append(b, `,"old_record":`...)
			if b, err = e.OldRecord.appendJSON(b); err != nil {
				return nil, err
			}
		}
		if len(e.UnchangedColumns) > 0 {
			b = append(b, `,"unchanged_columns":[`...)
			for i, c := range e.UnchangedColumns {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, c)
			}
			b = append(b, ']')
		}
	}
	b = append(b, `,"timestamp":"`...)
	b = e.Timestamp.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if !e.Position.IsZero() {
		b = append(b, `,"position":"`...)
		b = e.Position.AppendText(b)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

func compactJSON(raw json.RawMessage) []byte {
	if !bytes.ContainsAny(raw, "\n\r\t") {
		return raw
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}

// Tx is one committed transaction's events, in order, as handed over by the
// WAL reader.
type Tx struct {
	// CommitLSN is the LSN of the commit record (the LSN part of every
	// event's Position).
	CommitLSN uint64
	// EndLSN is the end of the commit record: what the reader acknowledges.
	EndLSN     uint64
	CommitTime time.Time
	Events     []*Event
}
