package phoenix

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

// TestChangeDataAfterCodec: in cluster mode the Supabase endpoint of every
// node encodes the event decoded from the broker's binary codec
// (docs/cluster.md section 3); its postgres_changes data, columns and key
// columns included, is the same as on the node that read the WAL.
func TestChangeDataAfterCodec(t *testing.T) {
	types := []broker.ColumnType{{Name: "id", Type: "int8", Key: true}, {Name: "at", Type: "timestamptz"}, {Name: "bin", Type: "bytea"},
		{Name: "ats", Type: "_timestamptz"}, {Name: "doc", Type: "jsonb"}, {Name: "n", Type: "numeric"}, {Name: "org", Type: "text", Key: true}}
	row := broker.Row{{Name: "id", Value: int64(7)}, {Name: "at", Value: "2026-01-02T03:04:05.5Z"}, {Name: "bin", Value: "Af8="},
		{Name: "ats", Value: []any{"2026-01-02T03:04:05Z", nil}}, {Name: "doc", Value: json.RawMessage(`{"k":[1]}`)},
		{Name: "n", Value: json.Number("12.50")}, {Name: "org", Value: "acme"}}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	for _, action := range []string{broker.ActionCreate, broker.ActionUpdate, broker.ActionDelete} {
		ev := &broker.Event{Kind: broker.KindRecord, Collection: "audit:logins", Action: action, Record: row, ColumnTypes: types, Timestamp: ts}
		b, err := broker.AppendBinary(nil, ev, 1)
		if err != nil {
			t.Fatal(err)
		}
		rt, _, err := broker.DecodeBinary(b, broker.Position{LSN: 1, Index: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, sel := range []map[string]bool{nil, {"n": true}} {
			if want, got := ChangeDataSelect(ev, sel), ChangeDataSelect(rt, sel); string(want) != string(got) {
				t.Errorf("%s, select %v: after the codec\n got %s\nwant %s", action, sel, got, want)
			}
		}
	}
}
