package phoenix

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

// CommitTimestampLayout is the form of commit_timestamp in Supabase
// Realtime (milliseconds, UTC, "Z").
const CommitTimestampLayout = "2006-01-02T15:04:05.000Z"

// SchemaTable splits a collection name into schema and table ("posts" is
// public.posts, "audit:logins" is audit.logins).
func SchemaTable(collection string) (schema, table string) {
	if s, t, ok := strings.Cut(collection, ":"); ok {
		return s, t
	}
	return "public", collection
}

// Collection is the collection name of schema.table.
func Collection(schema, table string) string {
	if schema == "public" {
		return table
	}
	return schema + ":" + table
}

// ChangeType is the postgres_changes type of a record event's action
// ("INSERT", "UPDATE", "DELETE"), or "" for actions Supabase does not send
// (truncate).
func ChangeType(action string) string {
	switch action {
	case broker.ActionCreate:
		return "INSERT"
	case broker.ActionUpdate:
		return "UPDATE"
	case broker.ActionDelete:
		return "DELETE"
	}
	return ""
}

// ChangeData encodes the data object of a postgres_changes message for a
// record event:
//
//	{"schema","table","commit_timestamp","type","columns":[{"name","type"}],
//	 "record" (INSERT, UPDATE), "old_record" (UPDATE when logged, DELETE),
//	 "errors":null}
//
// Values are those of PROTOCOL section 4, except where Supabase's
// (Postgres's to_jsonb) form differs: timestamptz ends in "+00:00" rather
// than "Z", timestamp has a "T", and bytea is "\x" and hex, so that
// realtime-js gives the same JavaScript values as against Supabase.
func ChangeData(ev *broker.Event) []byte { return ChangeDataSelect(ev, nil) }

// ChangeDataSelect is ChangeData with only the selected columns (plus the
// key columns) in columns, record and old_record, as a binding's select
// asks; nil selects every column.
func ChangeDataSelect(ev *broker.Event, sel map[string]bool) []byte {
	schema, table := SchemaTable(ev.Collection)
	types := ev.ColumnTypes
	record, oldRecord := ev.Record, ev.OldRecord
	if sel != nil {
		keep := map[string]struct{}{}
		types = nil
		for _, c := range ev.ColumnTypes {
			if sel[c.Name] || c.Key {
				types = append(types, c)
			} else {
				keep[c.Name] = struct{}{}
			}
		}
		record, oldRecord = record.Without(keep), oldRecord.Without(keep)
	}
	b := make([]byte, 0, 256+96*len(ev.Record)+96*len(ev.OldRecord)+32*len(ev.ColumnTypes))
	b = append(b, `{"schema":`...)
	b = appendString(b, schema)
	b = append(b, `,"table":`...)
	b = appendString(b, table)
	b = append(b, `,"commit_timestamp":"`...)
	b = ev.Timestamp.UTC().AppendFormat(b, CommitTimestampLayout)
	b = append(b, `","type":`...)
	b = appendString(b, ChangeType(ev.Action))
	b = append(b, `,"columns":[`...)
	for i, c := range types {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, c.Name)
		b = append(b, `,"type":`...)
		b = appendString(b, c.Type)
		b = append(b, '}')
	}
	b = append(b, ']')
	switch ev.Action {
	case broker.ActionCreate:
		b = appendRow(append(b, `,"record":`...), record, types)
	case broker.ActionUpdate:
		b = appendRow(append(b, `,"record":`...), record, types)
		old := oldRecord
		if old == nil {
			// Postgres logged no old image: the key is unchanged, so the
			// new row's key columns are the old ones (as Supabase sends).
			old = keyColumns(record, types)
		}
		b = appendRow(append(b, `,"old_record":`...), old, types)
	case broker.ActionDelete:
		b = appendRow(append(b, `,"old_record":`...), record, types)
	}
	return append(b, `,"errors":null}`...)
}

// BroadcastData encodes the payload of a broadcast message for a custom
// event: {"type":"broadcast","event":…,"payload":data} (data {} when the
// event has none).
func BroadcastData(ev *broker.Event) []byte {
	b := make([]byte, 0, 64+len(ev.Name)+len(ev.Data))
	b = append(b, `{"type":"broadcast","event":`...)
	b = appendString(b, ev.Name)
	b = append(b, `,"payload":`...)
	if len(ev.Data) == 0 {
		b = append(b, "{}"...)
	} else {
		b = appendCompact(b, ev.Data)
	}
	return append(b, '}')
}

func appendCompact(b []byte, raw json.RawMessage) []byte {
	if bytes.ContainsAny(raw, "\n\r\t ") {
		var buf bytes.Buffer
		if json.Compact(&buf, raw) == nil {
			return append(b, buf.Bytes()...)
		}
	}
	return append(b, raw...)
}

// keyColumns returns the columns of row that are part of the key.
func keyColumns(row broker.Row, types []broker.ColumnType) broker.Row {
	out := broker.Row{}
	for _, t := range types {
		if !t.Key {
			continue
		}
		if v, ok := row.Get(t.Name); ok {
			out = append(out, broker.Column{Name: t.Name, Value: v})
		}
	}
	return out
}

// appendRow encodes row as a JSON object in column order, converting the
// values whose Supabase form differs (see ChangeData). types is the
// table's columns, in the same order as the row's (a row may skip some).
func appendRow(b []byte, row broker.Row, types []broker.ColumnType) []byte {
	b = append(b, '{')
	j := 0
	for i := range row {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, row[i].Name)
		b = append(b, ':')
		typ := ""
		for k := 0; k < len(types); k++ { // usually the next one
			if c := types[(j+k)%len(types)]; c.Name == row[i].Name {
				typ, j = c.Type, (j+k+1)%len(types)
				break
			}
		}
		n := len(b)
		var err error
		if b, err = broker.AppendValue(b, supabaseValue(typ, row[i].Value)); err != nil {
			b = append(b[:n], "null"...) // a value encoding/json refuses (never from the WAL reader)
		}
	}
	return append(b, '}')
}

// supabaseValue converts v (PROTOCOL section 4 form) to the JSON value
// Postgres's to_jsonb gives for a column of type typ.
func supabaseValue(typ string, v any) any {
	if strings.HasPrefix(typ, "_") {
		arr, ok := v.([]any)
		if !ok {
			return v
		}
		out := make([]any, len(arr))
		for i := range arr {
			out[i] = supabaseValue(typ[1:], arr[i])
		}
		return out
	}
	s, ok := v.(string)
	if !ok {
		return v
	}
	switch typ {
	case "timestamptz":
		if strings.HasSuffix(s, "Z") {
			if _, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return s[:len(s)-1] + "+00:00"
			}
		}
	case "timestamp":
		if len(s) > 10 && s[10] == ' ' {
			return s[:10] + "T" + s[11:]
		}
	case "bytea":
		raw, err := base64.StdEncoding.DecodeString(s)
		if err == nil {
			return `\x` + hex.EncodeToString(raw)
		}
	}
	return v
}
