package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// codecValues are the typed values cdc produces (cdc/values.go,
// cdc/values_test.go): text, int2/4/8, float4/8 (non-finite ones as text),
// numeric, bool, json/jsonb, timestamptz and bytea as text, arrays of
// those, NULL; plus int and int32, which Row's encoding also takes.
var codecValues = []any{
	nil, true, false,
	int64(0), int64(7), int64(-42), int64(255), int64(256), int64(math.MaxInt64), int64(math.MinInt64),
	0.25, 1.5, math.Copysign(0, -1), 1e300, 5e-324, 0.1, -123.456,
	"", "x", "ann", "0100", "a,b", "héllo\n\"<>&\\", "NaN", "-Infinity", "2026-01-02T03:04:05.678901Z", "AQL/", "infinity",
	json.Number("12.5000"), json.Number("-0.000100"), json.Number("123456789012345678901234567890.1"), json.Number("7"),
	json.RawMessage(`{"k":[1,2]}`), json.RawMessage(`null`), json.RawMessage(`"s"`), json.RawMessage(`[{"a":1},null]`), json.RawMessage(`1.0`),
	[]any{}, []any{int64(1), nil, int64(3)}, []any{[]any{int64(1), int64(2)}, []any{int64(3), int64(4)}},
	[]any{"a", "b c", nil, "NULL"}, []any{json.RawMessage(`{"a":1}`), nil}, []any{json.Number("1.50"), 2.5, true, false},
	int(-3), int32(-3),
}

var codecColumnTypes = []ColumnType{{Name: "id", Type: "int8", Key: true}, {Name: "v", Type: "_int4"}, {Name: "", Type: ""}}

// codecEvents returns events covering every field and every corpus value.
func codecEvents() []*Event {
	ts := time.Date(2026, 11, 25, 19, 44, 50, 914653000, time.UTC)
	var evs []*Event
	for i, v := range codecValues {
		evs = append(evs, &Event{Kind: KindRecord, Collection: "people", Action: ActionUpdate, RecordID: fmt.Sprint(i),
			Record: Row{{"id", int64(i)}, {"v", v}}, OldRecord: Row{{"v", v}}, ColumnTypes: codecColumnTypes,
			Timestamp: ts, Position: Position{LSN: 0x3656A20, Index: uint32(i + 1)}})
	}
	return append(evs,
		&Event{Kind: KindRecord, Collection: "audit:logins", Action: ActionCreate, RecordID: "1,x",
			Record: Row{}, Timestamp: ts.In(time.FixedZone("x", 3600))},
		&Event{Kind: KindRecord, Collection: "t", Action: ActionUpdate, RecordID: "2", OldRecordID: "1",
			Record: Row{{"id", int64(2)}, {"big", nil}}, UnchangedColumns: []string{"big", "é"}, ColumnTypes: []ColumnType{}},
		&Event{Kind: KindRecord, Collection: "t", Action: ActionTruncate, Timestamp: ts},
		&Event{Kind: KindCustom, Collection: "chat", Name: "typing", RecordID: "r1", Data: json.RawMessage("{\"a\":\n[1]}"), Timestamp: ts},
		&Event{Kind: KindCustom, Collection: "chat", Name: "ping", Data: json.RawMessage{}, Timestamp: time.Unix(1, 5)},
		&Event{Kind: KindCustom, Collection: "chat", Name: "ping"},
	)
}

// roundTrip encodes ev, decodes it at ev's position and checks the
// transaction length and every field that crosses.
func roundTrip(t testing.TB, ev *Event, txLen int) *Event {
	t.Helper()
	b, err := AppendBinary([]byte("prefix"), ev, txLen)
	if err != nil {
		t.Fatalf("AppendBinary: %v", err)
	}
	got, gotLen, err := DecodeBinary(b[len("prefix"):], ev.Position)
	if err != nil {
		t.Fatalf("DecodeBinary: %v", err)
	}
	if gotLen != txLen {
		t.Fatalf("txLen %d, want %d", gotLen, txLen)
	}
	want, wantErr := ev.Encode()
	have, haveErr := got.Encode()
	if !bytes.Equal(want, have) || (wantErr == nil) != (haveErr == nil) {
		t.Fatalf("Encode after the round trip:\n got %s (%v)\nwant %s (%v)", have, haveErr, want, wantErr)
	}
	// The string form decodes the same event.
	gotS, gotSLen, err := DecodeBinaryString(string(b[len("prefix"):]), ev.Position)
	if err != nil || gotSLen != txLen {
		t.Fatalf("DecodeBinaryString: %v, txLen %d, want %d", err, gotSLen, txLen)
	}
	if haveS, _ := gotS.Encode(); !bytes.Equal(haveS, have) || !reflect.DeepEqual(gotS, got) {
		t.Fatalf("DecodeBinaryString differs from DecodeBinary:\n got %+v\nwant %+v", gotS, got)
	}
	if !reflect.DeepEqual(got.ColumnTypes, ev.ColumnTypes) || got.OldRecordID != ev.OldRecordID ||
		!got.Timestamp.Equal(ev.Timestamp) || got.Timestamp.Location() != time.UTC {
		t.Fatalf("round trip changed ColumnTypes, OldRecordID or Timestamp:\n got %+v\nwant %+v", got, ev)
	}
	if (got.Record == nil) != (ev.Record == nil) || (got.OldRecord == nil) != (ev.OldRecord == nil) || (got.Data == nil) != (ev.Data == nil) {
		t.Fatalf("round trip changed nil-ness of a row or data:\n got %+v\nwant %+v", got, ev)
	}
	return got
}

func TestCodecRoundTrip(t *testing.T) {
	for i, ev := range codecEvents() {
		got := roundTrip(t, ev, i)
		assertSameFilterVerdicts(t, ev, got)
	}
}

// TestBinaryDecoderSharesAllocations: a BinaryDecoder decodes every corpus
// event exactly as DecodeBinaryString does, while consecutive events with
// the same column types share one slice and each row is capped, so that
// growing one event's row never writes into another's.
func TestBinaryDecoderSharesAllocations(t *testing.T) {
	var bd BinaryDecoder
	evs := codecEvents()
	bd.Reserve(len(evs) / 2) // the rest come one by one
	var got []*Event
	for i, ev := range evs {
		b, err := AppendBinary(nil, ev, i)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		want, _, err := DecodeBinaryString(s, ev.Position)
		if err != nil {
			t.Fatal(err)
		}
		have, txLen, err := bd.Decode(s, ev.Position)
		if err != nil || txLen != i {
			t.Fatalf("event %d: %v, txLen %d", i, err, txLen)
		}
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("event %d: BinaryDecoder gives\n%+v\nDecodeBinaryString\n%+v", i, have, want)
		}
		got = append(got, have)
	}
	if &got[1].ColumnTypes[0] != &got[0].ColumnTypes[0] {
		t.Error("consecutive events with the same column types do not share them")
	}
	want0, _ := got[0].Encode()
	got[1].Record = append(got[1].Record, Column{"extra", int64(1)})
	got[1].Record[0].Value = int64(-1)
	if have0, _ := got[0].Encode(); !bytes.Equal(have0, want0) || cap(got[0].Record) != len(got[0].Record) {
		t.Fatalf("changing event 1's row changed event 0: %s, was %s", have0, want0)
	}
	if _, _, err := bd.Decode("\x01garbage", Position{}); !errors.Is(err, ErrBadBinary) {
		t.Fatalf("garbage: %v", err)
	}
}

// TestCodecKeepsValueTypes checks the dynamic type of each value, which
// rules and filters branch on (int and int32 are widened to int64).
func TestCodecKeepsValueTypes(t *testing.T) {
	for _, v := range codecValues {
		got := roundTrip(t, &Event{Kind: KindRecord, Record: Row{{"v", v}}}, 1).Record[0].Value
		want := v
		switch x := v.(type) {
		case int:
			want = int64(x)
		case int32:
			want = int64(x)
		case []any:
			if len(x) == 0 {
				want = []any{}
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%#v came back as %#v", v, got)
		}
	}
}

// filterTexts are filters on column c probing every operator and the
// number/text distinction.
func filterTexts(c string, v any) []string {
	fs := []string{"eq.7", "eq.07", "neq.7", "lt.1", "lte.0.25", "gt.-5", "gte.100.5", "eq.ann", "gt.a", "in.(1,7,ann)",
		"is.null", "is.true", "is.false", "eq.true", "eq.0100", "eq.12.5", "eq.NaN", `eq.{"k":[1,2]}`}
	if b, err := AppendValue(nil, v); err == nil {
		fs = append(fs, "eq."+strings.Trim(string(b), `"`))
	}
	for i := range fs {
		fs[i] = c + "=" + fs[i]
	}
	return fs
}

func assertSameFilterVerdicts(t testing.TB, ev, got *Event) {
	t.Helper()
	for _, row := range []Row{ev.Record, ev.OldRecord, {{"nope", nil}}} {
		for _, c := range row {
			for _, text := range filterTexts(c.Name, c.Value) {
				fs, err := ParseFilters(text)
				if err != nil {
					continue // a value that is not a valid filter literal
				}
				if a, b := fs.Match(ev), fs.Match(got); a != b {
					t.Fatalf("filter %s: %v on the event, %v on its round trip (%#v)", text, a, b, c.Value)
				}
			}
		}
	}
}

func TestCodecUnsupportedValue(t *testing.T) {
	deep := any(int64(1))
	for range MaxCodecDepth + 1 {
		deep = []any{deep}
	}
	for _, c := range []struct {
		v    any
		want string
	}{
		{map[string]any{"a": 1}, "map[string]interface {}"},
		{time.Unix(0, 0), "time.Time"},
		{uint64(1), "uint64"},
		{float32(1), "float32"},
		{[]string{"a"}, "[]string"},
		{[]any{int64(1), struct{}{}}, "struct {}"},
		{math.NaN(), "NaN"},
		{math.Inf(-1), "-Inf"},
		{deep, "nested deeper than 32"},
	} {
		ev := &Event{Kind: KindRecord, Record: Row{{"id", int64(1)}}, OldRecord: Row{{"odd", c.v}}}
		_, err := AppendBinary(nil, ev, 1)
		if !errors.Is(err, ErrUnsupportedValue) || !strings.Contains(err.Error(), `old_record column "odd"`) ||
			!strings.Contains(err.Error(), c.want) {
			t.Errorf("%T: error %v; want ErrUnsupportedValue naming the column and %q", c.v, err, c.want)
		}
	}
	for _, ev := range []*Event{{Kind: 0}, {Kind: 3}} {
		if _, err := AppendBinary(nil, ev, 1); err == nil {
			t.Errorf("kind %d encoded", ev.Kind)
		}
	}
	if _, err := AppendBinary(nil, &Event{Kind: KindCustom}, -1); err == nil {
		t.Error("negative txLen encoded")
	}
}

// TestDecodeBinaryRejects: every strict prefix of a payload (truncation),
// trailing bytes, unknown format, kind and tag are errors, never events.
func TestDecodeBinaryRejects(t *testing.T) {
	for _, ev := range codecEvents() {
		b, err := AppendBinary(nil, ev, 3)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(b) {
			if _, _, err := DecodeBinary(b[:n], Position{}); !errors.Is(err, ErrBadBinary) {
				t.Fatalf("prefix of %d of %d bytes: %v, want ErrBadBinary", n, len(b), err)
			}
		}
		if _, _, err := DecodeBinary(append(b, 0), Position{}); err == nil || !strings.Contains(err.Error(), "trailing") {
			t.Fatalf("trailing byte: %v", err)
		}
	}
	good, _ := AppendBinary(nil, &Event{Kind: KindRecord, Record: Row{{"v", int64(1)}}}, 1)
	for name, b := range map[string][]byte{
		"unknown format 2":      append([]byte{2}, good[1:]...),
		"unknown kind 3":        append([]byte{1, 1, 3}, good[3:]...),
		"unknown value tag 'x'": bytes.Replace(good, []byte{'i', 2}, []byte{'x', 2}, 1),
		"key flag 7":            mustAppend(t, &Event{Kind: KindRecord, ColumnTypes: []ColumnType{{Name: "a", Type: "b", Key: true}}}, func(b []byte) { b[bytes.LastIndexByte(b, 'b')+1] = 7 }),
		"non-finite float64":    mustAppend(t, &Event{Kind: KindRecord, Record: Row{{"v", 1.0}}}, func(b []byte) { copy(b[bytes.IndexByte(b, 'd')+1:], []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x7f}) }),
		"nested deeper":         append(append([]byte{1, 0, 1, 0, 0, 0, 0, 0, 2, 1, 'v'}, bytes.Repeat([]byte{'a', 1}, MaxCodecDepth+1)...), 'z', 0, 0, 0, 0, 0, 0),
		"exceeds":               {1, 1, 1, 10, 'x'},
	} {
		_, _, err := DecodeBinary(b, Position{})
		if !errors.Is(err, ErrBadBinary) || !strings.Contains(err.Error(), strings.TrimPrefix(name, "unknown ")) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func mustAppend(t *testing.T, ev *Event, edit func([]byte)) []byte {
	t.Helper()
	b, err := AppendBinary(nil, ev, 1)
	if err != nil {
		t.Fatal(err)
	}
	edit(b)
	return b
}

// FuzzDecodeBinary: no input panics; what decodes re-encodes, decodes to
// the same wire JSON again, and none of its strict prefixes decodes.
// Run longer with: go test ./broker -run '^$' -fuzz FuzzDecodeBinary -fuzztime 1m
func FuzzDecodeBinary(f *testing.F) {
	for i, ev := range codecEvents() {
		b, err := AppendBinary(nil, ev, i)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, txLen, err := DecodeBinary(b, Position{LSN: 1, Index: 1})
		if err != nil {
			if !errors.Is(err, ErrBadBinary) || ev != nil {
				t.Fatalf("error %v does not wrap ErrBadBinary, or came with an event", err)
			}
			return
		}
		roundTrip(t, ev, txLen)
		if len(b) < 2048 {
			for n := range len(b) {
				if _, _, err := DecodeBinary(b[:n], Position{}); err == nil {
					t.Fatalf("prefix of %d of %d bytes decoded", n, len(b))
				}
			}
		}
	})
}

// FuzzCodecRoundTrip builds events from fuzz input (columns of corpus
// values, arrays of them, random strings and numbers) and checks that the
// wire JSON and every filter verdict survive the round trip.
func FuzzCodecRoundTrip(f *testing.F) {
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06"), "ann", int64(7), 0.5)
	f.Add([]byte("\xff\x10\x20\x30"), "0100", int64(-1), 1e300)
	f.Fuzz(func(t *testing.T, choices []byte, s string, n int64, x float64) {
		if len(choices) > 64 {
			choices = choices[:64] // the verdict check is quadratic in the columns
		}
		ev := fuzzEvent(choices, s, n, x)
		got := roundTrip(t, ev, len(choices))
		assertSameFilterVerdicts(t, ev, got)
	})
}

// fuzzEvent turns choices into an event: each byte picks a column's value.
func fuzzEvent(choices []byte, s string, n int64, x float64) *Event {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		x = 0
	}
	names := []string{"id", "user_id", "total", "v"}
	ev := &Event{Kind: KindRecord, Collection: s, Action: ActionUpdate, RecordID: s, Timestamp: time.Unix(n%1e12, n%1e9)}
	for i, c := range choices {
		var v any
		switch c % 8 {
		case 0:
			v = s
		case 1:
			v = n
		case 2:
			v = x
		case 3:
			v = json.Number(fmt.Sprint(n)) // cdc passes numeric text through
		case 4:
			v = []any{s, n, x, nil}
		default:
			v = codecValues[int(c)%len(codecValues)]
		}
		col := Column{Name: names[i%len(names)] + strings.Repeat("_", i/len(names)), Value: v}
		if c&0x80 != 0 {
			ev.OldRecord = append(ev.OldRecord, col)
		} else {
			ev.Record = append(ev.Record, col)
			ev.ColumnTypes = append(ev.ColumnTypes, ColumnType{Name: col.Name, Type: s, Key: c&0x40 != 0})
		}
	}
	if len(choices) > 0 && choices[0]%3 == 0 {
		ev.Kind, ev.Name, ev.Data = KindCustom, s, json.RawMessage(fmt.Sprintf(`{"id":%d,"user_id":%q}`, n, s))
	}
	return ev
}

// BenchmarkCodec encodes and decodes a typical 6-column row with its
// column types; it reports the payload size next to the wire JSON's.
func BenchmarkCodec(b *testing.B) {
	ev := &Event{Kind: KindRecord, Collection: "orders", Action: ActionUpdate, RecordID: "12345",
		Record: Row{{"id", int64(12345)}, {"user_id", "u-8812"}, {"status", "shipped"}, {"total", json.Number("199.90")},
			{"meta", json.RawMessage(`{"gift":true,"note":"leave at door"}`)}, {"updated_at", "2026-11-25T19:44:50.914653Z"}},
		ColumnTypes: []ColumnType{{"id", "int8", true}, {"user_id", "text", false}, {"status", "text", false},
			{"total", "numeric", false}, {"meta", "jsonb", false}, {"updated_at", "timestamptz", false}},
		Timestamp: time.Date(2026, 11, 25, 19, 44, 50, 914653000, time.UTC)}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendBinary(buf[:0], ev, 1); err != nil {
			b.Fatal(err)
		}
		if _, _, err := DecodeBinary(buf, Position{LSN: 1, Index: 1}); err != nil {
			b.Fatal(err)
		}
	}
	wire, _ := ev.Encode()
	b.ReportMetric(float64(len(buf)), "bytes/event")
	b.ReportMetric(float64(len(wire)), "json-bytes/event")
}

// BenchmarkDecodeBinary compares decoding from bytes (a copy of the
// payload) with decoding from a string it shares (the Redis follower).
func BenchmarkDecodeBinary(b *testing.B) {
	ev := &Event{Kind: KindRecord, Collection: "bench", Action: ActionCreate, RecordID: "12345",
		Record:      Row{{"id", int64(12345)}, {"v", int64(7)}, {"note", "row number 7 of the catch-up backlog"}},
		ColumnTypes: []ColumnType{{"id", "int8", true}, {"v", "int4", false}, {"note", "text", false}},
		Timestamp:   time.Date(2026, 11, 25, 19, 44, 50, 914653000, time.UTC)}
	buf, err := AppendBinary(nil, ev, 1000)
	if err != nil {
		b.Fatal(err)
	}
	str := string(buf)
	b.Run("bytes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := DecodeBinary(buf, Position{LSN: 1, Index: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("string", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := DecodeBinaryString(str, Position{LSN: 1, Index: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// As the Redis follower decodes an entry of 64 events.
	b.Run("decoder", func(b *testing.B) {
		var bd BinaryDecoder
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i%64 == 0 {
				bd.Reserve(64)
			}
			i++
			if _, _, err := bd.Decode(str, Position{LSN: 1, Index: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
