package redisbroker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
)

// Stream entries (docs/cluster.md section 5). An entry carries up to
// maxEntryEvents consecutive events of one transaction (at most
// maxEntryBytes of payload, or one event), so that a large transaction
// costs Redis and every reader a few entries instead of one per row. The
// entry id is the position of its last event; field p is the id of the
// entry before it (or a base <LSN>-0), field e the payload:
//
//	byte    entryFormat (2)
//	uvarint count of events (1…maxEntryEvents)
//	count × { uvarint index; uvarint len; len bytes: broker.AppendBinary
//	          of the event (codec format 1, with its transaction's length) }
//
// Indexes increase; the last one is the entry id's index.
const (
	entryFormat    = 2
	maxEntryEvents = 64
	maxEntryBytes  = 16 << 10
)

// streamFormat is what pgrealtime:{S}:format holds for this entry format.
const streamFormat = "2"

// entry is one decoded stream entry.
type entry struct {
	id, prev broker.Position
	events   []*broker.Event
	txLen    uint32
}

// entryBuilder encodes one transaction's events into entries.
type entryBuilder struct {
	buf    []byte // every entry's payload, one after the other
	starts []int  // where each entry's payload begins in buf
	counts []int
	ids    []broker.Position
	body   []byte // the entry being built, after its header
	n      int    // its events
	last   broker.Position
	scr    []byte // one event's encoding
}

func (eb *entryBuilder) reset() {
	eb.buf, eb.starts, eb.counts, eb.ids = eb.buf[:0], eb.starts[:0], eb.counts[:0], eb.ids[:0]
	eb.body, eb.n = eb.body[:0], 0
}

// add encodes ev into the entry being built, closing it first when ev
// would not fit; an error is the codec's refusal of ev (nothing added).
func (eb *entryBuilder) add(ev *broker.Event, txLen int) error {
	enc, err := broker.AppendBinary(eb.scr[:0], ev, txLen)
	if err != nil {
		return err
	}
	eb.scr = enc
	if eb.n > 0 && (eb.n == maxEntryEvents || len(eb.body)+len(enc) > maxEntryBytes) {
		eb.close()
	}
	eb.body = binary.AppendUvarint(eb.body, uint64(ev.Position.Index))
	eb.body = binary.AppendUvarint(eb.body, uint64(len(enc)))
	eb.body = append(eb.body, enc...)
	eb.n++
	eb.last = ev.Position
	return nil
}

// close ends the entry being built, if any.
func (eb *entryBuilder) close() {
	if eb.n == 0 {
		return
	}
	eb.starts = append(eb.starts, len(eb.buf))
	eb.buf = append(eb.buf, entryFormat)
	eb.buf = binary.AppendUvarint(eb.buf, uint64(eb.n))
	eb.buf = append(eb.buf, eb.body...)
	eb.counts = append(eb.counts, eb.n)
	eb.ids = append(eb.ids, eb.last)
	eb.body, eb.n = eb.body[:0], 0
}

// payloads returns each entry's payload (sharing one copy of the bytes).
func (eb *entryBuilder) payloads() [][]byte {
	buf := append([]byte(nil), eb.buf...)
	out := make([][]byte, len(eb.starts))
	for i, s := range eb.starts {
		end := len(buf)
		if i+1 < len(eb.starts) {
			end = eb.starts[i+1]
		}
		out[i] = buf[s:end:end]
	}
	return out
}

// errNoField is the decode error of an entry without the p or e field.
var errNoField = errors.New("entry lacks field p or e")

// decodeEntry decodes one stream entry (with bd, when set: the follower's
// decoder, which shares allocations) and checks it against its id: the
// events' positions increase within the id's commit LSN, the last is the
// id, every event carries the same transaction length and none is beyond
// it, and the predecessor is before the first event.
func decodeEntry(e rueidis.XRangeSlice, bd *broker.BinaryDecoder) (en entry, err error) {
	if bd == nil {
		bd = new(broker.BinaryDecoder)
	}
	if en.id, err = parseStreamID(e.ID); err != nil {
		return en, err
	}
	var p, payload string
	var hasP, hasE bool
	for _, x := range e.FieldValues {
		switch x.Field {
		case "p":
			p, hasP = x.Value, true
		case "e":
			payload, hasE = x.Value, true
		}
	}
	if !hasP || !hasE {
		return en, errNoField
	}
	if en.prev, err = parseStreamID(p); err != nil {
		return en, err
	}
	if en.id.Index == 0 {
		return en, errors.New("entry index 0 is a base, not an event")
	}
	d := entryDecoder{s: payload}
	if f := d.byte(); f != entryFormat {
		return en, fmt.Errorf("%w: entry format %d (this node reads format %d)", broker.ErrBadBinary, f, entryFormat)
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > maxEntryEvents) {
		return en, fmt.Errorf("%w: an entry of %d events (1 to %d)", broker.ErrBadBinary, n, maxEntryEvents)
	}
	en.events = make([]*broker.Event, 0, n)
	bd.Reserve(int(n))
	prev := en.prev
	for i := uint64(0); i < n && d.err == nil; i++ {
		idx := d.uvarint()
		size := d.uvarint()
		if d.err != nil {
			break
		}
		if idx == 0 || idx > math.MaxUint32 || size > uint64(len(d.s)-d.i) {
			return en, fmt.Errorf("%w: event %d of the entry: index %d, %d bytes of %d left", broker.ErrBadBinary, i+1, idx, size, len(d.s)-d.i)
		}
		pos := broker.Position{LSN: en.id.LSN, Index: uint32(idx)}
		ev, txLen, err := bd.Decode(d.s[d.i:d.i+int(size)], pos)
		if err != nil {
			return en, fmt.Errorf("event %s: %w", pos, err)
		}
		d.i += int(size)
		switch {
		case txLen == 0:
			return en, errors.New("entry carries a live event (transaction length 0)")
		case i > 0 && uint32(txLen) != en.txLen:
			return en, fmt.Errorf("entry's events disagree on their transaction's length (%d, then %d)", en.txLen, txLen)
		case uint64(idx) > uint64(txLen):
			return en, fmt.Errorf("entry index %d is beyond its transaction's last index %d", idx, txLen)
		case !prev.Less(pos):
			return en, fmt.Errorf("event %s is not after %s", pos, streamID(prev))
		}
		en.txLen = uint32(txLen)
		en.events = append(en.events, ev)
		prev = pos
	}
	switch {
	case d.err != nil:
		return en, d.err
	case d.i != len(d.s):
		return en, fmt.Errorf("%w: %d trailing bytes after the entry's events", broker.ErrBadBinary, len(d.s)-d.i)
	case prev != en.id:
		return en, fmt.Errorf("entry's last event is %s, not its id", streamID(prev))
	}
	return en, nil
}

// entryEvents reads only an entry payload's count of events (0 when the
// payload is not a valid header).
func entryEvents(e rueidis.XRangeSlice) int {
	d := entryDecoder{s: field(e.FieldValues, "e")}
	if d.byte() != entryFormat {
		return 0
	}
	n := d.uvarint()
	if d.err != nil || n > maxEntryEvents {
		return 0
	}
	return int(n)
}

// entryDecoder reads an entry's framing; the first error sticks.
type entryDecoder struct {
	s   string
	i   int
	err error
}

func (d *entryDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.i >= len(d.s) {
		d.err = fmt.Errorf("%w: entry truncated at byte %d", broker.ErrBadBinary, d.i)
		return 0
	}
	c := d.s[d.i]
	d.i++
	return c
}

func (d *entryDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(unsafe.Slice(unsafe.StringData(d.s[d.i:]), len(d.s)-d.i))
	if n <= 0 {
		d.err = fmt.Errorf("%w: entry truncated or overlong varint at byte %d", broker.ErrBadBinary, d.i)
		return 0
	}
	d.i += n
	return v
}
