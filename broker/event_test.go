package broker

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"
)

func TestPositionText(t *testing.T) {
	for _, tc := range []struct {
		pos  Position
		text string
	}{
		{Position{LSN: 0x16B3748, Index: 2}, "0/16B3748:2"},
		{Position{LSN: 0x1_0000_00AB, Index: 1}, "1/AB:1"},
		{Position{LSN: 0xFFFFFFFF_FFFFFFFF, Index: 4294967295}, "FFFFFFFF/FFFFFFFF:4294967295"},
	} {
		if got := tc.pos.String(); got != tc.text {
			t.Errorf("%#v.String() = %q, want %q", tc.pos, got, tc.text)
		}
		back, err := ParsePosition(tc.text)
		if err != nil || back != tc.pos {
			t.Errorf("ParsePosition(%q) = %v, %v", tc.text, back, err)
		}
		lower, err := ParsePosition("0/16b3748:2")
		if err != nil || lower != (Position{LSN: 0x16B3748, Index: 2}) {
			t.Errorf("lower-case hex not accepted: %v %v", lower, err)
		}
	}
	for _, bad := range []string{"", "0/16B3748", "16B3748:2", "0/:2", "/1:2", "0/ZZ:1", "0/1:x", "0/1:-1", "0/1:2:3"} {
		if _, err := ParsePosition(bad); !errors.Is(err, ErrBadPosition) {
			t.Errorf("ParsePosition(%q) err = %v, want ErrBadPosition", bad, err)
		}
	}
	a, b := Position{LSN: 5, Index: 9}, Position{LSN: 6, Index: 1}
	if !a.Less(b) || b.Less(a) || a.Compare(a) != 0 || !(Position{LSN: 5, Index: 1}).Less(a) {
		t.Error("Compare/Less order wrong")
	}
}

func TestParsePattern(t *testing.T) {
	ok := map[string]Pattern{
		"*":              {All: true},
		"posts":          {Collection: "posts"},
		"posts.*":        {Collection: "posts"},
		"posts.123":      {Collection: "posts", ID: "123"},
		"posts.a.b.c":    {Collection: "posts", ID: "a.b.c"},
		"audit:logins.7": {Collection: "audit:logins", ID: "7"},
		"posts.1,2":      {Collection: "posts", ID: "1,2"},
	}
	for s, want := range ok {
		got, err := ParsePattern(s)
		if err != nil || got != want {
			t.Errorf("ParsePattern(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	long := make([]byte, 257)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", " ", "posts ", "po sts", "\tposts", "*.x", "*.*", "posts.", ".1", "po*sts", "**", string(long)} {
		if _, err := ParsePattern(bad); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("ParsePattern(%q) err = %v, want ErrInvalidTopic", bad, err)
		}
	}
	if got, _ := ParsePattern("posts"); got.String() != "posts.*" {
		t.Errorf("canonical form = %q", got.String())
	}
}

func TestEncodeRecordEvent(t *testing.T) {
	ev := &Event{
		Kind: KindRecord, Collection: "posts", Action: ActionUpdate, RecordID: "123",
		Record: Row{
			{"id", int64(123)}, {"title", "New \"quoted\" <b>"}, {"tags", []any{"a", "b"}},
			{"meta", json.RawMessage(`{"k":1}`)}, {"price", json.Number("12.500")},
			{"ratio", 0.25}, {"nan", "NaN"}, {"ok", true}, {"gone", nil},
		},
		OldRecord:        Row{{"id", int64(123)}, {"title", "Old"}},
		UnchangedColumns: []string{"body"},
		Timestamp:        time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.FixedZone("x", 3600)),
		Position:         Position{LSN: 0x16B3748, Index: 2},
	}
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"record_event","collection":"posts","action":"update","record_id":"123",` +
		`"record":{"id":123,"title":"New \"quoted\" \u003cb\u003e","tags":["a","b"],"meta":{"k":1},"price":12.500,"ratio":0.25,"nan":"NaN","ok":true,"gone":null},` +
		`"old_record":{"id":123,"title":"Old"},"unchanged_columns":["body"],` +
		`"timestamp":"2026-01-02T02:04:05.678901Z","position":"0/16B3748:2"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	if !json.Valid(b) {
		t.Fatal("invalid JSON")
	}
	if _, err := (&Event{Kind: KindRecord, Record: Row{{"x", math.Inf(1)}}}).Encode(); err == nil {
		t.Fatal("an infinite float64 must be an error, not invalid JSON")
	}
}

func TestEncodeCustomEvent(t *testing.T) {
	ev := &Event{Kind: KindCustom, Collection: "chat", Name: "typing", RecordID: "room1",
		Data: json.RawMessage("{\n \"user\": \"ann\"\n}"), Timestamp: time.Unix(0, 0)}
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"custom_event","collection":"chat","event":"typing","record_id":"room1","data":{"user":"ann"},"timestamp":"1970-01-01T00:00:00Z"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestRowWithout(t *testing.T) {
	r := Row{{"a", 1}, {"secret", 2}, {"b", 3}}
	got := r.Without(map[string]struct{}{"secret": {}})
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Fatalf("got %v", got)
	}
	if len(r) != 3 || r[1].Name != "secret" {
		t.Fatal("Without modified the original row")
	}
	same := r.Without(map[string]struct{}{"nope": {}})
	if &same[0] != &r[0] {
		t.Fatal("Without copied a row it did not change")
	}
}

// TestEncodeKeepsNoSpareCapacity: an event's JSON is retained with it in
// the history (a catch-up holds hundreds of thousands), so Encode returns
// it at its own size, not inside a larger buffer.
func TestEncodeKeepsNoSpareCapacity(t *testing.T) {
	ev := &Event{Kind: KindRecord, Collection: "bench", Action: ActionCreate, RecordID: "12345",
		Record:    Row{{"id", int64(12345)}, {"v", int64(7)}, {"note", "backlog row 7"}},
		Timestamp: time.Date(2026, 11, 25, 19, 44, 50, 914653000, time.UTC), Position: Position{LSN: 1, Index: 1}}
	for range 3 {
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		// Size classes round up by at most an eighth above 128 bytes.
		if cap(b) > len(b)+len(b)/8+16 {
			t.Fatalf("Encode returned %d bytes in a buffer of %d", len(b), cap(b))
		}
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %s", b)
		}
	}
}
