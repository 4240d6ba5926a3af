package phoenix

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

func ptr(s string) *string { return &s }

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vsn     Vsn
		frame   string
		want    Message
		wantErr string
	}{
		{name: "v1 join", vsn: V1, frame: `{"topic":"realtime:x","event":"phx_join","payload":{"config":{}},"ref":"1","join_ref":"1"}`,
			want: Message{JoinRef: ptr("1"), Ref: ptr("1"), Topic: "realtime:x", Event: "phx_join", Payload: json.RawMessage(`{"config":{}}`)}},
		{name: "v1 heartbeat without join_ref", vsn: V1, frame: `{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}`,
			want: Message{Ref: ptr("7"), Topic: "phoenix", Event: "heartbeat", Payload: json.RawMessage(`{}`)}},
		{name: "v2 push", vsn: V2, frame: `["3","4","realtime:x","broadcast",{"type":"broadcast"}]`,
			want: Message{JoinRef: ptr("3"), Ref: ptr("4"), Topic: "realtime:x", Event: "broadcast", Payload: json.RawMessage(`{"type":"broadcast"}`)}},
		{name: "v2 null refs, null payload", vsn: V2, frame: ` [null,null,"phoenix","heartbeat",null] `,
			want: Message{Topic: "phoenix", Event: "heartbeat", Payload: json.RawMessage(`{}`)}},
		{name: "numeric ref", vsn: V2, frame: `[1,2,"t","e",{}]`,
			want: Message{JoinRef: ptr("1"), Ref: ptr("2"), Topic: "t", Event: "e", Payload: json.RawMessage(`{}`)}},

		{name: "empty", vsn: V1, frame: ``, wantErr: "empty frame"},
		{name: "v1 array", vsn: V1, frame: `["1","1","t","e",{}]`, wantErr: "serializer 1.0.0 frames are JSON objects"},
		{name: "v2 object", vsn: V2, frame: `{"topic":"t"}`, wantErr: "serializer 2.0.0 frames are JSON arrays"},
		{name: "not json", vsn: V1, frame: `{nope`, wantErr: "not a JSON object"},
		{name: "v2 short", vsn: V2, frame: `["1","1","t","e"]`, wantErr: "array has 4 elements; want 5"},
		{name: "v2 broken", vsn: V2, frame: `["1",`, wantErr: "not a JSON array"},
		{name: "missing topic", vsn: V1, frame: `{"event":"e","payload":{}}`, wantErr: "missing topic"},
		{name: "empty event", vsn: V2, frame: `[null,null,"t","",{}]`, wantErr: "event is empty"},
		{name: "topic not a string", vsn: V2, frame: `[null,null,5,"e",{}]`, wantErr: "topic must be a string"},
		{name: "ref object", vsn: V2, frame: `[null,{},"t","e",{}]`, wantErr: "ref must be a string or null"},
		{name: "payload array", vsn: V1, frame: `{"topic":"t","event":"e","payload":[1]}`, wantErr: "payload must be a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.vsn, []byte(tc.frame))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrFrame) {
					t.Fatalf("err = %v, want ErrFrame containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !eqRef(m.JoinRef, tc.want.JoinRef) || !eqRef(m.Ref, tc.want.Ref) || m.Topic != tc.want.Topic ||
				m.Event != tc.want.Event || !bytes.Equal(m.Payload, tc.want.Payload) {
				t.Fatalf("got %+v (payload %s), want %+v", m, m.Payload, tc.want)
			}
		})
	}
}

func eqRef(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func TestParseVsn(t *testing.T) {
	for in, want := range map[string]Vsn{"": V1, "1.0.0": V1, "2.0.0": V2} {
		if v, err := ParseVsn(in); err != nil || v != want || (in != "" && v.String() != in) {
			t.Errorf("ParseVsn(%q) = %v, %v", in, v, err)
		}
	}
	if _, err := ParseVsn("3.0.0"); err == nil || !strings.Contains(err.Error(), "use 1.0.0 or 2.0.0") {
		t.Errorf("ParseVsn(3.0.0): %v", err)
	}
}

func TestDecodeBinary(t *testing.T) {
	frame := EncodeBinaryPush("1", "2", "realtime:room", "cursor", []byte(`{"x":1}`))
	m, err := DecodeBinary(frame)
	if err != nil {
		t.Fatal(err)
	}
	if *m.JoinRef != "1" || *m.Ref != "2" || m.Topic != "realtime:room" || m.Event != EventBroadcast {
		t.Fatalf("got %+v", m)
	}
	if string(m.Payload) != `{"type":"broadcast","event":"cursor","payload":{"x":1}}` {
		t.Fatalf("payload %s", m.Payload)
	}
	// With metadata, as realtime-js sends allowed metadata keys.
	withMeta := append([]byte{3, 0, 0, 1, 1, 10, 1}, []byte(`te{"id":"7"}[1]`)...)
	if m, err = DecodeBinary(withMeta); err != nil || string(m.Payload) != `{"type":"broadcast","event":"e","payload":[1],"id":"7"}` {
		t.Fatalf("with meta: %v %s", err, m.Payload)
	}

	for name, tc := range map[string]struct {
		frame []byte
		want  string
	}{
		"short":        {[]byte{3, 0}, "shorter than its 7-byte header"},
		"kind":         {[]byte{4, 0, 0, 1, 1, 0, 1, 't', 'e'}, "only user broadcast pushes (kind 3)"},
		"truncated":    {[]byte{3, 0, 0, 200, 1, 0, 1, 't'}, "truncated"},
		"no topic":     {[]byte{3, 0, 0, 0, 1, 0, 1, 'e'}, "empty topic"},
		"no event":     {[]byte{3, 0, 0, 1, 0, 0, 1, 't'}, "empty event name"},
		"raw bytes":    {[]byte{3, 0, 0, 1, 1, 0, 0, 't', 'e', 0xff}, "ArrayBuffer"},
		"bad encoding": {[]byte{3, 0, 0, 1, 1, 0, 9, 't', 'e'}, "unknown payload encoding 9"},
		"bad json":     {append([]byte{3, 0, 0, 1, 1, 0, 1, 't', 'e'}, "{x"...), "not valid JSON"},
		"bad meta":     {append([]byte{3, 0, 0, 1, 1, 2, 1, 't', 'e'}, "[]{}"...), "metadata is not a JSON object"},
	} {
		if _, err := DecodeBinary(tc.frame); err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrFrame) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}

func TestAppendMessageAndEnvelope(t *testing.T) {
	payload := []byte(`{"ids":[1],"data":{"a":"<b>"}}`)
	for _, v := range []Vsn{V1, V2} {
		b := AppendMessage(nil, v, ptr("1"), nil, "realtime:\"x\"", "postgres_changes", payload)
		m, err := Decode(v, b)
		if err != nil {
			t.Fatalf("%v: own encoding does not decode: %v (%s)", v, err, b)
		}
		if *m.JoinRef != "1" || m.Ref != nil || m.Topic != `realtime:"x"` || m.Event != "postgres_changes" || !bytes.Equal(m.Payload, payload) {
			t.Fatalf("%v: round trip %+v", v, m)
		}
		pre, post := Envelope(v, ptr("1"), `realtime:"x"`, "postgres_changes", []byte(`{"ids":[1],"data":`), []byte(`}`))
		framed := append(append(append([]byte(nil), pre...), `{"a":"<b>"}`...), post...)
		if !bytes.Equal(framed, b) {
			t.Fatalf("%v: envelope gives %s, want %s", v, framed, b)
		}
	}
	if got := string(Reply("error", ErrorResponse(`bad "x"`))); got != `{"status":"error","response":{"reason":"bad \"x\""}}` {
		t.Fatalf("reply: %s", got)
	}
}

func TestBindingID(t *testing.T) {
	a := BindingID("*", "public", "todos", "")
	if a != BindingID("*", "public", "todos", "") || a == BindingID("INSERT", "public", "todos", "") || a == BindingID("*", "public", "todo", "s") {
		t.Fatal("ids must be equal for equal bindings and differ otherwise")
	}
	if a >= 1<<27 {
		t.Fatalf("id %d does not fit Supabase's range", a)
	}
}

func TestChangeData(t *testing.T) {
	types := []broker.ColumnType{{Name: "id", Type: "int8", Key: true}, {Name: "at", Type: "timestamptz"}, {Name: "ts", Type: "timestamp"},
		{Name: "bin", Type: "bytea"}, {Name: "ats", Type: "_timestamptz"}, {Name: "doc", Type: "jsonb"}, {Name: "n", Type: "numeric"}}
	row := broker.Row{{Name: "id", Value: int64(7)}, {Name: "at", Value: "2026-01-02T03:04:05.5Z"}, {Name: "ts", Value: "2026-01-02 03:04:05"},
		{Name: "bin", Value: "Af8="}, {Name: "ats", Value: []any{"2026-01-02T03:04:05Z", nil}}, {Name: "doc", Value: json.RawMessage(`{"k":[1]}`)},
		{Name: "n", Value: json.Number("12.50")}}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	ev := &broker.Event{Kind: broker.KindRecord, Collection: "audit:logins", Action: broker.ActionUpdate, Record: row, ColumnTypes: types, Timestamp: ts}
	var got map[string]any
	if err := json.Unmarshal(ChangeData(ev), &got); err != nil {
		t.Fatalf("ChangeData is not JSON: %v", err)
	}
	want := map[string]any{
		"schema": "audit", "table": "logins", "commit_timestamp": "2026-01-02T03:04:05.678Z", "type": "UPDATE", "errors": nil,
		"columns": []any{map[string]any{"name": "id", "type": "int8"}, map[string]any{"name": "at", "type": "timestamptz"},
			map[string]any{"name": "ts", "type": "timestamp"}, map[string]any{"name": "bin", "type": "bytea"},
			map[string]any{"name": "ats", "type": "_timestamptz"}, map[string]any{"name": "doc", "type": "jsonb"}, map[string]any{"name": "n", "type": "numeric"}},
		"record": map[string]any{"id": 7.0, "at": "2026-01-02T03:04:05.5+00:00", "ts": "2026-01-02T03:04:05", "bin": `\x01ff`,
			"ats": []any{"2026-01-02T03:04:05+00:00", nil}, "doc": map[string]any{"k": []any{1.0}}, "n": 12.5},
		"old_record": map[string]any{"id": 7.0}, // no old image logged: the key
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("ChangeData:\n got %s\nwant %s", gb, wb)
	}

	ins := &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionCreate, Record: broker.Row{{Name: "id", Value: int64(1)}}, Timestamp: ts}
	if s := string(ChangeData(ins)); strings.Contains(s, "old_record") || !strings.Contains(s, `"schema":"public","table":"posts"`) || !strings.Contains(s, `"columns":[]`) {
		t.Fatalf("insert: %s", s)
	}
	del := &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionDelete, Record: broker.Row{{Name: "id", Value: int64(1)}}, Timestamp: ts}
	if s := string(ChangeData(del)); strings.Contains(s, `"record"`) || !strings.Contains(s, `"old_record":{"id":1}`) || !strings.Contains(s, `"type":"DELETE"`) {
		t.Fatalf("delete: %s", s)
	}
}

func TestBroadcastData(t *testing.T) {
	ev := &broker.Event{Kind: broker.KindCustom, Collection: "room", Name: "cur\"sor", Data: json.RawMessage("{\n \"x\": 1}")}
	if got := string(BroadcastData(ev)); got != `{"type":"broadcast","event":"cur\"sor","payload":{"x":1}}` {
		t.Fatalf("got %s", got)
	}
	ev.Data = nil
	if got := string(BroadcastData(ev)); got != `{"type":"broadcast","event":"cur\"sor","payload":{}}` {
		t.Fatalf("got %s", got)
	}
}

// FuzzDecode: no frame crashes the decoders, and what decodes re-encodes
// to valid JSON that decodes to the same message.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"topic":"t","event":"e","payload":{},"ref":"1"}`, `["1","2","t","e",{"a":1}]`, `[null,null,"t","e",null]`, `[`, `{"topic":1}`} {
		f.Add([]byte(s), false)
	}
	f.Add(EncodeBinaryPush("1", "2", "t", "e", []byte(`{"x":1}`)), true)
	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		if binary {
			m, err := DecodeBinary(data)
			if err == nil && !json.Valid(m.Payload) {
				t.Fatalf("binary payload is not JSON: %s", m.Payload)
			}
			return
		}
		for _, v := range []Vsn{V1, V2} {
			m, err := Decode(v, data)
			if err != nil {
				continue
			}
			b := AppendMessage(nil, v, m.JoinRef, m.Ref, m.Topic, m.Event, m.Payload)
			if !json.Valid(b) {
				t.Fatalf("re-encoding is not JSON: %s", b)
			}
			m2, err := Decode(v, b)
			if err != nil || m2.Topic != m.Topic || m2.Event != m.Event || !eqRef(m2.Ref, m.Ref) || !eqRef(m2.JoinRef, m.JoinRef) {
				t.Fatalf("round trip of %s: %v %+v", b, err, m2)
			}
		}
	})
}

func TestChangeDataSelect(t *testing.T) {
	ev := &broker.Event{Kind: broker.KindRecord, Collection: "notes", Action: broker.ActionUpdate,
		ColumnTypes: []broker.ColumnType{{Name: "id", Type: "int4", Key: true}, {Name: "body", Type: "text"}, {Name: "extra", Type: "text"}},
		Record:      broker.Row{{Name: "id", Value: int64(1)}, {Name: "body", Value: "b"}, {Name: "extra", Value: "x"}}}
	got := string(ChangeDataSelect(ev, map[string]bool{"body": true}))
	for _, want := range []string{`"columns":[{"name":"id","type":"int4"},{"name":"body","type":"text"}]`, `"record":{"id":1,"body":"b"}`, `"old_record":{"id":1}`} {
		if !strings.Contains(got, want) {
			t.Errorf("%s lacks %s", got, want)
		}
	}
	if strings.Contains(got, "extra") || len(ev.Record) != 3 {
		t.Errorf("select leaked a column or changed the event: %s", got)
	}
}
