package rules

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// In cluster mode every node runs Prepare and Allow on the event decoded
// from the broker's binary codec (docs/cluster.md section 3). These tests
// check that the verdicts, and the event a subscriber receives, are the
// same as on the event the WAL reader made.

const codecRules = `
collections:
  people:
    read: "auth.sub == record.owner || record.n > 3"
  numbers:
    read: "record.total > 100.0 && record.id == 7"
  exact:
    read: "record.total == 12.5 || record.v == 1.5"
  docs:
    read: "record.meta.k[0] == 1 || record.meta.owner == auth.sub"
  arrays:
    read: "size(record.tags) > 1 && record.tags[0] == 'a'"
  secret:
    read: "record.secret == 'x' && auth.role == 'member'"
    omit_columns: [secret]
  typed:
    read: "type(record.v) == int || type(record.v) == double || record.v == true || record.v == null"
  chat:
    read: "action == 'custom' && record.room == 'r1'"
  off:
    read: "true"
    events: false
default:
  read: "auth.role == 'member'"
`

// codecRuleValues are the typed values cdc produces (cdc/values.go).
var codecRuleValues = []any{
	nil, true, false, int64(0), int64(7), int64(-42), int64(math.MaxInt64), 0.25, 1.5, 150.0, 12.5,
	"", "ann", "a", "r1", "x", "0100", "2026-01-02T03:04:05Z",
	json.Number("12.5000"), json.Number("150"), json.Number("99999999999999999999"), json.Number("-0.000100"),
	json.RawMessage(`{"k":[1,2]}`), json.RawMessage(`{"owner":"ann"}`), json.RawMessage(`null`), json.RawMessage(`[1]`),
	[]any{}, []any{"a", "b", nil}, []any{int64(1), nil}, []any{[]any{int64(1)}}, []any{json.RawMessage(`{"a":1}`)},
}

var codecIdentities = []*auth.Identity{nil, admin, user("ann", "member"), user("bob", "")}

// codecRuleEvent builds an event of collection coll whose columns take the
// values the choices pick.
func codecRuleEvent(coll string, choices []byte) *broker.Event {
	names := []string{"owner", "n", "total", "id", "v", "meta", "tags", "secret", "room"}
	ev := &broker.Event{Kind: broker.KindRecord, Collection: coll, Action: broker.ActionUpdate, RecordID: "7",
		Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Position: broker.Position{LSN: 9, Index: 1}}
	for i, c := range choices {
		col := broker.Column{Name: names[i%len(names)], Value: codecRuleValues[int(c)%len(codecRuleValues)]}
		ev.Record = append(ev.Record, col)
		ev.ColumnTypes = append(ev.ColumnTypes, broker.ColumnType{Name: col.Name, Type: "text", Key: col.Name == "id"})
		if c&0x80 != 0 {
			ev.OldRecord = append(ev.OldRecord, col)
		}
	}
	if len(choices) > 0 && choices[0]%5 == 0 {
		ev.Kind, ev.Name, ev.Action = broker.KindCustom, "ping", ""
		ev.Data, _ = ev.Record.MarshalJSON()
		ev.Record, ev.OldRecord, ev.ColumnTypes = nil, nil, nil
	}
	return ev
}

// assertSameRuleVerdicts checks Prepare, the prepared event's JSON and
// Allow for every identity on ev and on its codec round trip. ev is
// consumed (Prepare trims it). It returns how many of the identities that
// are not admin may see the event.
func assertSameRuleVerdicts(t *testing.T, s *Set, ev *broker.Event) (allowed int) {
	t.Helper()
	b, err := broker.AppendBinary(nil, ev, 1)
	if err != nil {
		t.Fatalf("AppendBinary: %v", err)
	}
	rt, _, err := broker.DecodeBinary(b, ev.Position)
	if err != nil {
		t.Fatalf("DecodeBinary: %v", err)
	}
	if a, b := s.Prepare(ev), s.Prepare(rt); a != b {
		t.Fatalf("%s: Prepare %v on the event, %v on its round trip", ev.Collection, a, b)
	}
	if a, b := mustEncode(t, ev), mustEncode(t, rt); !bytes.Equal(a, b) {
		t.Fatalf("prepared event differs after the round trip:\n got %s\nwant %s", b, a)
	}
	for _, id := range codecIdentities {
		a, b := s.Allow(id, ev), s.Allow(id, rt)
		if a != b {
			t.Fatalf("%s as %v: Allow %v on the event, %v on its round trip (%s)", ev.Collection, id, a, b, mustEncode(t, ev))
		}
		if a && id != admin {
			allowed++
		}
	}
	return allowed
}

func mustEncode(t *testing.T, ev *broker.Event) []byte {
	t.Helper()
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var codecCollections = []string{"people", "numbers", "exact", "docs", "arrays", "secret", "typed", "chat", "off", "unlisted"}

func TestCodecRuleVerdicts(t *testing.T) {
	s := compile(t, codecRules)
	for _, coll := range codecCollections {
		allowed, denied := 0, 0
		for i := range codecRuleValues {
			// Every value in every column position, with neighbours varying.
			choices := []byte{byte(i), byte(i + 1), byte(i + 2), byte(i), byte(i + 3), byte(i), byte(i), byte(i), byte(i) | 0x80}
			for shift := range choices {
				c := append(choices[shift:], choices[:shift]...)
				n := assertSameRuleVerdicts(t, s, codecRuleEvent(coll, c))
				allowed += n
				denied += len(codecIdentities) - 1 - n
			}
		}
		// Each rule both allows and denies some events (off: none).
		if (allowed == 0 && coll != "off") || denied == 0 {
			t.Errorf("%s: %d allowed, %d denied: the rows do not exercise its rule", coll, allowed, denied)
		}
	}
}

// FuzzCodecRuleVerdicts is TestCodecRuleVerdicts over fuzzed rows.
// Run longer with: go test ./wsapi/rules -run '^$' -fuzz FuzzCodecRuleVerdicts -fuzztime 1m
func FuzzCodecRuleVerdicts(f *testing.F) {
	f.Add(uint8(0), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add(uint8(3), []byte{22, 23, 24, 0x80})
	s := compile(f, codecRules)
	f.Fuzz(func(t *testing.T, coll uint8, choices []byte) {
		if len(choices) > 64 {
			choices = choices[:64]
		}
		assertSameRuleVerdicts(t, s, codecRuleEvent(codecCollections[int(coll)%len(codecCollections)], choices))
	})
}
