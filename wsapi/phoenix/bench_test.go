package phoenix

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

func benchEvent() *broker.Event {
	return &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionUpdate,
		Timestamp: time.Now(),
		ColumnTypes: []broker.ColumnType{{Name: "id", Type: "int8", Key: true}, {Name: "title", Type: "text"},
			{Name: "user_id", Type: "text"}, {Name: "created_at", Type: "timestamptz"}, {Name: "tags", Type: "_text"}, {Name: "meta", Type: "jsonb"}},
		Record: broker.Row{{Name: "id", Value: int64(123)}, {Name: "title", Value: "Hello, world"}, {Name: "user_id", Value: "ann"},
			{Name: "created_at", Value: "2026-01-02T03:04:05.678901Z"}, {Name: "tags", Value: []any{"a", "b"}}, {Name: "meta", Value: json.RawMessage(`{"k":1}`)}}}
}

// BenchmarkChangeData: the once-per-event encoding of a postgres_changes
// payload (6 columns).
func BenchmarkChangeData(b *testing.B) {
	ev := benchEvent()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ChangeData(ev)
	}
}

// BenchmarkFramePerSubscriber: what each subscriber costs on top, framing
// the shared payload (the write path's appendFrame).
func BenchmarkFramePerSubscriber(b *testing.B) {
	ref := "1"
	pre, post := Envelope(V2, &ref, "realtime:room1", EventPostgresChanges, []byte(`{"ids":[12345678],"data":`), []byte("}"))
	data := ChangeData(benchEvent())
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = append(append(append(buf[:0], pre...), data...), post...)
	}
}
