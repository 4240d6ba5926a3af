package cdc

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
)

// pgoutput message builders (the format of the recorded fixtures).

func cstring(b []byte, s string) []byte { return append(append(b, s...), 0) }

func relationMsg(id uint32, ns, name string, cols []string, oids []uint32, key int) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = cstring(b, ns)
	b = cstring(b, name)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for i, c := range cols {
		flag := byte(0)
		if i == key {
			flag = 1
		}
		b = append(b, flag)
		b = cstring(b, c)
		b = binary.BigEndian.AppendUint32(b, oids[i])
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

func insertMsg(id uint32, vals []string) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func beginMsg(lsn uint64) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, lsn)
	b = binary.BigEndian.AppendUint64(b, 0)
	return binary.BigEndian.AppendUint32(b, 1)
}

// BenchmarkDecode decodes typical 8-column Insert messages into events.
// One op is one event.
func BenchmarkDecode(b *testing.B) {
	cols := []string{"id", "title", "created_at", "published", "meta", "price", "tags", "author_id"}
	oids := []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.TimestamptzOID, pgtype.BoolOID, pgtype.JSONBOID, pgtype.NumericOID, pgtype.TextArrayOID, pgtype.UUIDOID}
	vals := []string{"123456", "Hello, realtime world", "2026-01-02 03:04:05.678901+00", "t", `{"likes": 3, "lang": "en"}`, "1234.50", `{news,intro,"two words"}`, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}
	d := newDecoder(&fixtureCatalog{Keys: map[string][]string{"public.posts": {"id"}}}, zerolog.Nop())
	ctx := context.Background()
	if _, err := d.decode(ctx, relationMsg(1, "public", "posts", cols, oids, 0)); err != nil {
		b.Fatal(err)
	}
	if _, err := d.decode(ctx, beginMsg(1<<32)); err != nil {
		b.Fatal(err)
	}
	msg := insertMsg(1, vals)
	// Sanity check of the decoded event.
	if _, err := d.decode(ctx, msg); err != nil {
		b.Fatal(err)
	}
	got, _ := d.tx.Events[0].Encode()
	want := `{"type":"record_event","collection":"posts","action":"create","record_id":"123456","record":{"id":123456,"title":"Hello, realtime world","created_at":"2026-01-02T03:04:05.678901Z","published":true,"meta":{"likes": 3, "lang": "en"},"price":1234.50,"tags":["news","intro","two words"],"author_id":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},"timestamp":"2000-01-01T00:00:00Z","position":"1/0:1"}`
	if string(got) != want {
		b.Fatalf("decoded\n%s\nwant\n%s", got, want)
	}
	events := make([]*broker.Event, 0, 4096)
	d.tx.Events = events
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(d.tx.Events) == cap(d.tx.Events) {
			d.tx.Events = events[:0] // a transaction's event slice is reused here only
		}
		if _, err := d.decode(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/event")
}

func commitMsg(lsn, end uint64) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, lsn)
	b = binary.BigEndian.AppendUint64(b, end)
	return binary.BigEndian.AppendUint64(b, 0)
}

// BenchmarkDecodeSingleRowTx decodes Begin, a 3-column Insert and Commit:
// the stream of single-row transactions of the write-overhead benchmark.
// One op is one transaction.
func BenchmarkDecodeSingleRowTx(b *testing.B) {
	cols := []string{"id", "v", "note"}
	oids := []uint32{pgtype.Int8OID, pgtype.Int4OID, pgtype.TextOID}
	d := newDecoder(&fixtureCatalog{Keys: map[string][]string{"public.bench": {"id"}}}, zerolog.Nop())
	ctx := context.Background()
	if _, err := d.decode(ctx, relationMsg(1, "public", "bench", cols, oids, 0)); err != nil {
		b.Fatal(err)
	}
	ins := insertMsg(1, []string{"1234567", "7654321", "live row"})
	begin, commit := beginMsg(1<<32), commitMsg(1<<32, 1<<32+64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(ctx, begin); err != nil {
			b.Fatal(err)
		}
		if _, err := d.decode(ctx, ins); err != nil {
			b.Fatal(err)
		}
		out, err := d.decode(ctx, commit)
		if err != nil || out.tx == nil || len(out.tx.Events) != 1 {
			b.Fatalf("commit: %v, %+v", err, out)
		}
	}
}
