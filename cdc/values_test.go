package cdc

import (
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"
)

func TestParseArray(t *testing.T) {
	d := newDecoder(&fixtureCatalog{}, zerolog.Nop())
	intT := &colType{kind: kindInt}
	cases := []struct {
		in   string
		elem *colType
		want string // JSON, or "error"
	}{
		{`{}`, textType, `[]`},
		{`{1,2,NULL}`, intT, `[1,2,null]`},
		{`{{1,2},{3,4}}`, intT, `[[1,2],[3,4]]`},
		{`[0:1]={5,6}`, intT, `[5,6]`},
		{`{"a b","c,d","e\"f","g\\h",NULL,"NULL",null}`, textType, `["a b","c,d","e\"f","g\\h",null,"NULL",null]`},
		{`{"{}",""}`, textType, `["{}",""]`},
		{`{x`, textType, `error`},
		{`{1,,2}`, intT, `error`},
		{`{"x}`, textType, `error`},
		{`{1}x`, intT, `error`},
	}
	for _, c := range cases {
		v, err := parseArray(c.in, ',', d, c.elem)
		got := "error"
		if err == nil {
			b, _ := json.Marshal(v)
			got = string(b)
		}
		if got != c.want {
			t.Errorf("parseArray(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestConvertScalars(t *testing.T) {
	d := newDecoder(&fixtureCatalog{}, zerolog.Nop())
	cases := []struct {
		kind valueKind
		in   string
		want string
	}{
		{kindInt, "-42", `-42`},
		{kindFloat, "1e+300", `1e+300`},
		{kindFloat, "-Infinity", `"-Infinity"`},
		{kindNumeric, "-0.000100", `-0.000100`},
		{kindNumeric, "Infinity", `"Infinity"`},
		{kindBool, "f", `false`},
		{kindTimestamptz, "2026-01-02 03:04:05+00", `"2026-01-02T03:04:05Z"`},
		{kindTimestamptz, "2026-01-02 05:34:05.1+02:30", `"2026-01-02T03:04:05.1Z"`},
		{kindTimestamptz, "infinity", `"infinity"`},
		{kindBytea, `\x`, `""`},
		{kindBytea, `\x68690a`, `"aGkK"`},
		{kindText, "x", `"x"`},
	}
	for _, c := range cases {
		b, err := json.Marshal(d.convert(&colType{kind: c.kind}, c.in))
		if err != nil || string(b) != c.want {
			t.Errorf("convert(%d, %q) = %s, %v; want %s", c.kind, c.in, b, err, c.want)
		}
	}
}

func TestParseCustomPayload(t *testing.T) {
	good := []string{
		`{"collection":"chat","event":"typing"}`,
		`{"collection":"chat","event":"typing","record_id":"r1","data":{"a":[1]}}`,
		`{"collection":"chat","event":"typing","record_id":null,"data":null,"extra":1}`,
	}
	for _, g := range good {
		if _, err := ParseCustomPayload([]byte(g)); err != nil {
			t.Errorf("ParseCustomPayload(%s): %v", g, err)
		}
	}
	bad := []string{``, `[]`, `"x"`, `{`, `{"event":"e"}`, `{"collection":"c"}`, `{"collection":"","event":"e"}`,
		`{"collection":1,"event":"e"}`, `{"collection":"c","event":"e","record_id":7}`}
	for _, b := range bad {
		if _, err := ParseCustomPayload([]byte(b)); err == nil {
			t.Errorf("ParseCustomPayload(%s) accepted", b)
		}
	}
	p, _ := ParseCustomPayload([]byte(`{"collection":"chat","event":"typing","record_id":"r1","data":{"a":[1]}}`))
	if p.Collection != "chat" || p.Event != "typing" || p.RecordID != "r1" || string(p.Data) != `{"a":[1]}` {
		t.Errorf("parsed %+v", p)
	}
}
