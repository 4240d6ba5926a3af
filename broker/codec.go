package broker

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unsafe"
)

// The cross-process event codec (format 1, docs/cluster.md section 3). It
// is a building block of the Redis broker: nothing in this package uses it
// yet.
//
// What crosses: every field a node needs to run its own Prepare (rules),
// filters and encodings exactly as the node that read the WAL would: kind,
// collection, action, name, record ids, both rows (omitted columns
// included), unchanged columns, column types (the Supabase endpoint's
// "columns" and key flags), custom data and timestamp, plus the length of
// the event's transaction. The position is not in the payload (it is the
// Redis stream entry id). Meta, JSON and the alternative encoding are
// node-local caches and never cross.
//
// Column values keep their dynamic type exactly: nil, bool, int64 (int and
// int32 are widened to it), float64 (finite), string, json.Number,
// json.RawMessage and []any of those, nested at most MaxCodecDepth deep.
// That is everything cdc produces (cdc/values.go); any other type is an
// encode error naming the column and the type.

// CodecFormat is the format byte AppendBinary writes first.
const CodecFormat = 1

// MaxCodecDepth bounds the nesting of []any values (Postgres arrays have
// at most 6 dimensions).
const MaxCodecDepth = 32

// ErrUnsupportedValue is wrapped by AppendBinary's error for a column value
// of a type the codec does not carry.
var ErrUnsupportedValue = errors.New("unsupported column value")

// ErrBadBinary is wrapped by every DecodeBinary error.
var ErrBadBinary = errors.New("malformed event payload")

// Value tags.
const (
	tagNil    = 'z'
	tagTrue   = 't'
	tagFalse  = 'f'
	tagInt    = 'i'
	tagDouble = 'd'
	tagString = 's'
	tagNumber = 'n'
	tagJSON   = 'j'
	tagArray  = 'a'
)

// AppendBinary appends the cross-process form of ev (format 1,
// docs/cluster.md section 3) to b. txLen is the number of events of ev's
// transaction (0 for live events). It is a building block: used by the
// Redis broker (docs/cluster.md), nothing uses it yet.
func AppendBinary(b []byte, ev *Event, txLen int) ([]byte, error) {
	if txLen < 0 || txLen > math.MaxUint32 {
		return nil, fmt.Errorf("encode event: transaction length %d out of range", txLen)
	}
	if ev.Kind != KindRecord && ev.Kind != KindCustom {
		return nil, fmt.Errorf("encode event: unknown kind %d", ev.Kind)
	}
	b = append(b, CodecFormat)
	b = binary.AppendUvarint(b, uint64(txLen))
	b = append(b, byte(ev.Kind))
	for _, s := range [...]string{ev.Collection, ev.Action, ev.Name, ev.RecordID, ev.OldRecordID} {
		b = appendStr(b, s)
	}
	var err error
	if b, err = appendRow(b, ev.Record, "record"); err != nil {
		return nil, err
	}
	if b, err = appendRow(b, ev.OldRecord, "old_record"); err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(len(ev.UnchangedColumns)))
	for _, c := range ev.UnchangedColumns {
		b = appendStr(b, c)
	}
	if ev.ColumnTypes == nil {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, 1+uint64(len(ev.ColumnTypes)))
		for _, c := range ev.ColumnTypes {
			b = appendStr(appendStr(b, c.Name), c.Type)
			if c.Key {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	}
	b = appendBytes(b, ev.Data)
	// Seconds and nanoseconds: every time.Time fits, the zero time too.
	b = binary.AppendVarint(b, ev.Timestamp.Unix())
	return binary.AppendUvarint(b, uint64(ev.Timestamp.Nanosecond())), nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendBytes writes 0 for nil, else 1+len and the bytes.
func appendBytes(b, p []byte) []byte {
	if p == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, 1+uint64(len(p)))
	return append(b, p...)
}

func appendRow(b []byte, r Row, which string) ([]byte, error) {
	if r == nil {
		return append(b, 0), nil
	}
	b = binary.AppendUvarint(b, 1+uint64(len(r)))
	for i := range r {
		b = appendStr(b, r[i].Name)
		var err error
		if b, err = appendBinaryValue(b, r[i].Value, 0); err != nil {
			return nil, fmt.Errorf("encode event: %s column %q: %w", which, r[i].Name, err)
		}
	}
	return b, nil
}

func appendBinaryValue(b []byte, v any, depth int) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, tagNil), nil
	case bool:
		if x {
			return append(b, tagTrue), nil
		}
		return append(b, tagFalse), nil
	case int64:
		return binary.AppendVarint(append(b, tagInt), x), nil
	case int:
		return binary.AppendVarint(append(b, tagInt), int64(x)), nil
	case int32:
		return binary.AppendVarint(append(b, tagInt), int64(x)), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: float64 %v (JSON has no such number)", ErrUnsupportedValue, x)
		}
		return binary.LittleEndian.AppendUint64(append(b, tagDouble), math.Float64bits(x)), nil
	case string:
		return appendStr(append(b, tagString), x), nil
	case json.Number:
		return appendStr(append(b, tagNumber), string(x)), nil
	case json.RawMessage:
		b = binary.AppendUvarint(append(b, tagJSON), uint64(len(x)))
		return append(b, x...), nil
	case []any:
		if depth >= MaxCodecDepth {
			return nil, fmt.Errorf("%w: arrays nested deeper than %d", ErrUnsupportedValue, MaxCodecDepth)
		}
		b = binary.AppendUvarint(append(b, tagArray), uint64(len(x)))
		for _, e := range x {
			var err error
			if b, err = appendBinaryValue(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: type %T (the codec carries nil, bool, int64, float64, string, json.Number, json.RawMessage and []any of those)", ErrUnsupportedValue, v)
}

// DecodeBinary decodes what AppendBinary wrote; pos is the event's position
// (the stream entry id; zero for live events). It returns the event and
// its transaction's length, or an error wrapping ErrBadBinary for
// truncated, trailing, unknown or malformed input. The event's strings
// and JSON values share one copy of b (b itself is not retained). Used by
// the Redis broker.
func DecodeBinary(b []byte, pos Position) (*Event, int, error) {
	return DecodeBinaryString(string(b), pos)
}

// DecodeBinaryString is DecodeBinary for a payload held in a string, which
// it shares instead of copying (strings are immutable): the event's
// strings and JSON values point into s, which stays alive as long as the
// event does. The Redis follower decodes its entries' payloads, which the
// client hands over as fresh strings, this way: one allocation and copy
// less per event.
func DecodeBinaryString(s string, pos Position) (*Event, int, error) {
	return decodeWhole(binDecoder{s: s}, pos)
}

// decodeWhole decodes the one event d holds, which must take all of it.
func decodeWhole(d binDecoder, pos Position) (*Event, int, error) {
	ev, txLen := d.event()
	if d.err == nil && d.i != len(d.s) {
		d.fail("%d trailing bytes", len(d.s)-d.i)
	}
	if d.err != nil {
		return nil, 0, d.err
	}
	ev.Position = pos
	return ev, txLen, nil
}

// BinaryDecoder decodes many payloads the way DecodeBinaryString does one,
// sharing allocations among their events: the events come from one array
// per Reserve, their rows from shared blocks (each row capped to its own
// columns), and an event whose column types are byte for byte those of the
// event decoded before it shares that event's ColumnTypes slice. A decoded
// event keeps its whole array and block alive. The Redis follower decodes
// each stream entry's events with one. The zero value is ready to use; it
// is not safe for concurrent use.
type BinaryDecoder struct {
	events    []Event  // reserved, not handed out yet
	cols      []Column // row block, not handed out yet
	typesRaw  string   // encoded column types of the last event
	lastTypes []ColumnType
}

// rowBlock is how many columns a row block holds (more for a larger row).
const rowBlock = 256

// Reserve makes room for n more events in one allocation.
func (bd *BinaryDecoder) Reserve(n int) {
	if n > len(bd.events) {
		bd.events = make([]Event, n)
	}
}

// Decode is DecodeBinaryString with bd's shared allocations.
func (bd *BinaryDecoder) Decode(s string, pos Position) (*Event, int, error) {
	return decodeWhole(binDecoder{s: s, bd: bd}, pos)
}

// newEvent hands out the next reserved event (a fresh one when none is).
func (bd *BinaryDecoder) newEvent() *Event {
	if len(bd.events) == 0 {
		return new(Event)
	}
	ev := &bd.events[0]
	bd.events = bd.events[1:]
	return ev
}

// row hands out a row of n columns from the current block.
func (bd *BinaryDecoder) row(n int) Row {
	if n > len(bd.cols) {
		bd.cols = make([]Column, max(rowBlock, n))
	}
	r := bd.cols[:n:n]
	bd.cols = bd.cols[n:]
	return Row(r)
}

// binDecoder reads a payload; the first error sticks and every later read
// returns zero values. bd, when set, shares allocations across payloads.
type binDecoder struct {
	s   string
	i   int
	err error
	bd  *BinaryDecoder
}

func (d *binDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", ErrBadBinary, d.i, fmt.Sprintf(format, args...))
	}
}

func (d *binDecoder) event() (*Event, int) {
	if f := d.byte(); d.err == nil && f != CodecFormat {
		d.fail("unknown format %d (this node reads format %d)", f, CodecFormat)
	}
	txLen := d.count(math.MaxUint32, "transaction length")
	var ev *Event
	if d.bd != nil {
		ev = d.bd.newEvent()
	} else {
		ev = new(Event)
	}
	ev.Kind = Kind(d.byte())
	if d.err == nil && ev.Kind != KindRecord && ev.Kind != KindCustom {
		d.fail("unknown kind %d", ev.Kind)
	}
	ev.Collection, ev.Action, ev.Name = d.str(), d.str(), d.str()
	ev.RecordID, ev.OldRecordID = d.str(), d.str()
	ev.Record, ev.OldRecord = d.row(), d.row()
	if n := d.sized(0, "unchanged columns"); n > 0 {
		ev.UnchangedColumns = make([]string, n)
		for i := range ev.UnchangedColumns {
			ev.UnchangedColumns[i] = d.str()
		}
	}
	ev.ColumnTypes = d.columnTypes()
	if n := d.sized(1, "data length"); n > 0 {
		ev.Data = d.raw(n - 1)
	}
	sec := d.varint()
	nsec := d.count(999_999_999, "timestamp nanoseconds")
	if d.err != nil {
		return nil, 0
	}
	ev.Timestamp = time.Unix(sec, int64(nsec)).UTC()
	return ev, txLen
}

// columnTypes reads the column types. With a BinaryDecoder, types
// encoded exactly as the last event's are that event's slice: the encoding
// is self-delimiting, so the same bytes decode to the same types.
func (d *binDecoder) columnTypes() []ColumnType {
	bd := d.bd
	if bd != nil && bd.lastTypes != nil && d.err == nil && strings.HasPrefix(d.s[d.i:], bd.typesRaw) {
		d.i += len(bd.typesRaw)
		return bd.lastTypes
	}
	at := d.i
	n := d.sized(1, "column types")
	if n == 0 {
		return nil
	}
	types := make([]ColumnType, n-1)
	for i := range types {
		c := &types[i]
		c.Name, c.Type = d.str(), d.str()
		switch k := d.byte(); k {
		case 0:
		case 1:
			c.Key = true
		default:
			d.fail("column type key flag %d", k)
		}
	}
	if bd != nil && d.err == nil {
		bd.typesRaw, bd.lastTypes = d.s[at:d.i], types
	}
	return types
}

func (d *binDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.i >= len(d.s) {
		d.fail("truncated")
		return 0
	}
	c := d.s[d.i]
	d.i++
	return c
}

func (d *binDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(unsafe.Slice(unsafe.StringData(d.s[d.i:]), len(d.s)-d.i))
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.i += n
	return v
}

func (d *binDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(unsafe.Slice(unsafe.StringData(d.s[d.i:]), len(d.s)-d.i))
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.i += n
	return v
}

// count reads a uvarint that must not exceed max.
func (d *binDecoder) count(max int, what string) int {
	v := d.uvarint()
	if d.err == nil && v > uint64(max) {
		d.fail("%s %d exceeds %d", what, v, max)
		return 0
	}
	return int(v)
}

// sized reads a length or count that must not exceed the bytes left after
// it plus extra (each counted item takes at least one byte), so that a
// corrupt count can neither read past the end nor make a huge allocation.
func (d *binDecoder) sized(extra int, what string) int {
	v := d.uvarint()
	if left := len(d.s) - d.i + extra; d.err == nil && v > uint64(left) {
		d.fail("%s %d exceeds the %d bytes left", what, v, left-extra)
		return 0
	}
	return int(v)
}

func (d *binDecoder) str() string {
	n := d.sized(0, "string length")
	if d.err != nil {
		return ""
	}
	s := d.s[d.i : d.i+n]
	d.i += n
	return s
}

// raw returns the next n bytes (already checked to be there) as a slice
// sharing the decoder's string: events are immutable, as in cdc/values.go.
func (d *binDecoder) raw(n int) []byte {
	if d.err != nil {
		return nil
	}
	s := d.s[d.i : d.i+n]
	d.i += n
	if n == 0 {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), n)
}

func (d *binDecoder) row() Row {
	n := d.sized(1, "column count")
	if n == 0 || d.err != nil {
		return nil
	}
	var r Row
	if d.bd != nil {
		r = d.bd.row(n - 1)
	} else {
		r = make(Row, n-1)
	}
	for i := range r {
		r[i].Name = d.str()
		r[i].Value = d.value(0)
	}
	return r
}

func (d *binDecoder) value(depth int) any {
	switch tag := d.byte(); tag {
	case tagNil:
		return nil
	case tagTrue:
		return true
	case tagFalse:
		return false
	case tagInt:
		return d.varint()
	case tagDouble:
		if len(d.s)-d.i < 8 {
			d.fail("truncated")
			return nil
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(d.s[d.i:]), 8)))
		d.i += 8
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail("non-finite float64")
		}
		return f
	case tagString:
		return d.str()
	case tagNumber:
		return json.Number(d.str())
	case tagJSON:
		return json.RawMessage(d.raw(d.sized(0, "JSON length")))
	case tagArray:
		if depth >= MaxCodecDepth {
			d.fail("arrays nested deeper than %d", MaxCodecDepth)
			return nil
		}
		n := d.sized(0, "array length")
		if d.err != nil {
			return nil
		}
		a := make([]any, n)
		for i := range a {
			a[i] = d.value(depth + 1)
		}
		return a
	default:
		if d.err == nil {
			d.i--
			d.fail("unknown value tag %q", tag)
		}
		return nil
	}
}
