package cdc

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
)

// The events cdc produces cross the Redis broker in broker's binary codec
// (docs/cluster.md section 3): these tests check that every value the
// decoder makes survives it, as the wire JSON, the column types and the
// filter verdicts every node computes.

// assertCodecRoundTrip encodes ev with broker.AppendBinary, decodes it and
// checks what every node derives from it. It returns the decoded event.
func assertCodecRoundTrip(t testing.TB, ev *broker.Event, txLen int) *broker.Event {
	t.Helper()
	b, err := broker.AppendBinary(nil, ev, txLen)
	if err != nil {
		t.Fatalf("AppendBinary: %v", err)
	}
	got, gotLen, err := broker.DecodeBinary(b, ev.Position)
	if err != nil || gotLen != txLen {
		t.Fatalf("DecodeBinary: %v (txLen %d, want %d)", err, gotLen, txLen)
	}
	want, _ := ev.Encode()
	have, _ := got.Encode()
	if string(want) != string(have) {
		t.Fatalf("Encode after the round trip:\n got %s\nwant %s", have, want)
	}
	if !reflect.DeepEqual(got.ColumnTypes, ev.ColumnTypes) || got.OldRecordID != ev.OldRecordID ||
		!slices.Equal(got.UnchangedColumns, ev.UnchangedColumns) || got.Position != ev.Position {
		t.Fatalf("round trip changed a field:\n got %+v\nwant %+v", got, ev)
	}
	for _, row := range []broker.Row{ev.Record, ev.OldRecord} {
		for _, c := range row {
			lit := ""
			if j, err := broker.AppendValue(nil, c.Value); err == nil {
				var s string
				if json.Unmarshal(j, &s) == nil {
					lit = s
				} else {
					lit = string(j)
				}
			}
			for _, f := range []string{"eq." + lit, "neq." + lit, "lt." + lit, "gte." + lit, "in.(" + lit + ",1)",
				"eq.1", "gt.0", "lt.a", "is.null", "is.true", "is.false"} {
				fs, err := broker.ParseFilters(c.Name + "=" + f)
				if err != nil {
					continue
				}
				if a, b := fs.Match(ev), fs.Match(got); a != b {
					t.Fatalf("filter %s=%s: %v on the event, %v on its round trip (%#v)", c.Name, f, a, b, c.Value)
				}
			}
		}
	}
	return got
}

// TestCodecRoundTripFixtures runs every event of every fixture through the
// codec, and checks that the fixtures hold every value type cdc makes.
func TestCodecRoundTripFixtures(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(fixtureDir, "*", "messages.bin"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no fixtures under testdata/cdc: %v", err)
	}
	seen := map[string]bool{}
	var note func(v any)
	note = func(v any) {
		seen[fmt.Sprintf("%T", v)] = true
		if a, ok := v.([]any); ok {
			for _, e := range a {
				note(e)
			}
		}
	}
	events, withTypes := 0, 0
	for _, p := range dirs {
		dir := filepath.Dir(p)
		var cat fixtureCatalog
		b, err := os.ReadFile(filepath.Join(dir, "catalog.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &cat); err != nil {
			t.Fatal(err)
		}
		d := newDecoder(&cat, zerolog.New(zerolog.NewTestWriter(t)))
		for i, m := range readMessages(t, p) {
			out, err := d.decode(context.Background(), m)
			if err != nil {
				t.Fatalf("%s message %d: %v", dir, i, err)
			}
			if out.live != nil {
				assertCodecRoundTrip(t, out.live, 0)
				events++
			}
			if out.tx == nil {
				continue
			}
			for _, ev := range out.tx.Events {
				assertCodecRoundTrip(t, ev, len(out.tx.Events))
				events++
				if ev.ColumnTypes != nil {
					withTypes++
				}
				for _, c := range append(slices.Clone(ev.Record), ev.OldRecord...) {
					note(c.Value)
				}
			}
		}
	}
	for _, typ := range []string{"<nil>", "bool", "int64", "float64", "string", "json.Number", "json.RawMessage", "[]interface {}"} {
		if !seen[typ] {
			t.Errorf("no fixture value of type %s (seen %v)", typ, seen)
		}
	}
	if withTypes == 0 {
		t.Error("no fixture event with ColumnTypes")
	}
	t.Logf("%d events, %d with column types, value types %v", events, withTypes, seen)
}
