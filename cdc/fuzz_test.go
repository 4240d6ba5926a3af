package cdc

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
)

// FuzzParseCustomPayload checks that no NOTIFY / pgrealtime.broadcast
// payload crashes the parser, and that every accepted payload becomes a
// custom event that encodes to valid JSON carrying the same fields and that
// a subscriber can actually match (PROTOCOL sections 2 and 5).
// Run longer with: go test ./cdc -run '^$' -fuzz FuzzParseCustomPayload -fuzztime 1m
func FuzzParseCustomPayload(f *testing.F) {
	for _, s := range []string{
		`{"collection":"chat","event":"typing"}`,
		`{"collection":"chat","event":"typing","record_id":"room1","data":{"user":"ann"}}`,
		`{"collection":"chat","event":"typing","record_id":null,"data":null,"extra":1}`,
		` {"collection":"audit:logins","event":"e","data":[1,"x",{"k":null}]} `,
		`{"collection":"chat","event":"typing","data":"\u2028<&>"}`,
		`{"collection":"a.b","event":"e"}`,
		`{"collection":"*","event":"e"}`,
		`{"collection":"a?b","event":"e"}`, // "?" starts column filters in a topic
		`{"collection":"c d","event":"e"}`,
		`{"collection":"c","event":"e","data":{"a":1}}x`,
		`{"collection":"c","event":"e","data":` + "\n{\n\"a\" :\t1}\n}",
		``, `[]`, `"x"`, `{`, `{"collection":1,"event":"e"}`, `{"collection":"c","event":"e","record_id":7}`,
		"{\"collection\":\"\xff\",\"event\":\"e\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseCustomPayload(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if p.Collection == "" || p.Event == "" {
			t.Fatalf("accepted %q with an empty collection or event: %+v", b, p)
		}
		pat, err := broker.ParsePattern(p.Collection)
		if err != nil || pat.All || pat.Collection != p.Collection || pat.ID != "" {
			t.Fatalf("accepted %q whose collection %q no topic pattern can name (%+v, %v): it could never be delivered", b, p.Collection, pat, err)
		}
		ev := p.ToEvent(time.Unix(0, 0), broker.Position{LSN: 1, Index: 1})
		enc, err := ev.Encode()
		if err != nil {
			t.Fatalf("encode %+v: %v", p, err)
		}
		var got struct {
			Type       string          `json:"type"`
			Collection string          `json:"collection"`
			Event      string          `json:"event"`
			RecordID   *string         `json:"record_id"`
			Data       json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("encoded event is not JSON: %v\n%s", err, enc)
		}
		if got.Type != "custom_event" || got.Event != p.Event {
			t.Fatalf("encoded %s from %+v", enc, p)
		}
		if bytes.ContainsRune([]byte(p.Collection), 0xFFFD) == false && got.Collection != p.Collection {
			t.Fatalf("collection %q encoded as %q", p.Collection, got.Collection)
		}
		if (got.RecordID != nil) != (p.RecordID != "") {
			t.Fatalf("record_id %q encoded as %v", p.RecordID, got.RecordID)
		}
		if (len(got.Data) > 0) != (len(p.Data) > 0) {
			t.Fatalf("data %q encoded as %q", p.Data, got.Data)
		}
		if len(p.Data) > 0 {
			var a, c bytes.Buffer
			if json.Compact(&a, p.Data) != nil || json.Compact(&c, got.Data) != nil || a.String() != c.String() {
				t.Fatalf("data %q encoded as %q", p.Data, got.Data)
			}
		}
	})
}

// FuzzConvert checks that no column text crashes the value conversion (a
// panic there would stop the stream at the same WAL record after every
// restart) and that values of types whose text Postgres does not
// guarantee to be JSON-shaped still encode to valid JSON; every value
// survives the cross-process codec (same JSON, same filter verdicts).
// Run longer with: go test ./cdc -run '^$' -fuzz FuzzConvert -fuzztime 1m
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		"", "1", "-9223372036854775808", "99999999999999999999", "NaN", "-Infinity", "1.5e300",
		"t", "f", `{"a":1}`, "2026-01-02 03:04:05.123456+00", "2026-01-02 03:04:05+05:30", "infinity",
		"294277-01-09 04:00:54.775807+00", `\x0aff`, `\x0`, `a\\b\001`, "{1,2,NULL}", "{{a,b},{c,d}}",
		`{"x y","q\"z",NULL,"NULL"}`, "[0:1]={1,2}", "[1:2", "{", "{}", "{,}", `{"}`, "{{1},2}", "{a;b}",
	} {
		f.Add(s)
	}
	d := newDecoder(nil, zerolog.Nop())
	scalar := []*colType{
		textType, {kind: kindInt}, {kind: kindFloat}, {kind: kindBool}, {kind: kindTimestamptz}, {kind: kindBytea},
	}
	var types []*colType
	for _, t := range scalar {
		types = append(types, t, &colType{kind: kindArray, elem: t, delim: ','}, &colType{kind: kindArray, elem: t, delim: ';'})
	}
	unchecked := []*colType{{kind: kindNumeric}, {kind: kindJSON}, {kind: kindArray, elem: &colType{kind: kindJSON}, delim: ','},
		{kind: kindArray, elem: &colType{kind: kindNumeric}, delim: ','}}
	f.Fuzz(func(t *testing.T, s string) {
		for _, ct := range unchecked {
			v := d.convert(ct, s)
			if _, err := broker.AppendValue(nil, v); err == nil {
				assertCodecRoundTrip(t, &broker.Event{Kind: broker.KindRecord, Record: broker.Row{{Name: "c", Value: v}}}, 1)
			}
		}
		for _, ct := range types {
			v := d.convert(ct, s)
			assertCodecRoundTrip(t, &broker.Event{Kind: broker.KindRecord, Record: broker.Row{{Name: "c", Value: v}}}, 1)
			b, err := broker.Row{{Name: "c", Value: v}}.MarshalJSON()
			if err != nil {
				t.Fatalf("kind %d elem %v: %q → %#v does not encode: %v", ct.kind, ct.elem, s, v, err)
			}
			if !json.Valid(b) {
				t.Fatalf("kind %d: %q → invalid JSON %s", ct.kind, s, b)
			}
		}
	})
}
