package cdc

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"unsafe"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// MessagePrefix is the pg_logical_emit_message prefix of custom events.
const MessagePrefix = "pgrealtime"

// typeInfo describes a type OID that pgx does not know (custom types).
type typeInfo struct {
	Name    string // pg_type.typname
	BaseOID uint32 // domain: its base type
	ElemOID uint32 // array: its element type
	Delim   byte   // array: element delimiter
}

// catalog answers the questions the WAL does not: which columns make the
// record id, and what a custom type is.
type catalog interface {
	// KeyColumns returns the record-id columns of rel in key order: the
	// primary key, else the REPLICA IDENTITY USING INDEX index; none when
	// the table has neither (or no longer exists).
	KeyColumns(ctx context.Context, rel *pglogrepl.RelationMessage) ([]string, error)
	// TypeInfo describes oid; the zero typeInfo means "plain text".
	TypeInfo(ctx context.Context, oid uint32) (typeInfo, error)
}

type relColumn struct {
	name  string
	flags uint8 // 1: part of the replica identity as pgoutput sees it
	typ   *colType
}

type relation struct {
	id         uint32
	collection string
	replIdent  byte
	cols       []relColumn
	keyIdx     []int // record-id columns, in key order
	// types is every column with its type name, shared by the
	// relation's events (broker.Event.ColumnTypes).
	types []broker.ColumnType
}

// span locates one column of a tuple inside the message buffer.
type span struct {
	kind     byte // 'n', 'u', 't' or 'b'
	off, len int
}

// decoded is what one pgoutput message produced.
type decoded struct {
	tx   *broker.Tx    // a complete transaction (at Commit)
	live *broker.Event // a non-transactional custom message
}

// decoder turns pgoutput (proto_version 1) messages into broker
// transactions. It is not safe for concurrent use.
type decoder struct {
	cat   catalog
	types *pgtype.Map
	log   zerolog.Logger

	rels      map[uint32]*relation
	typeCache map[uint32]*colType

	tx    *broker.Tx // open transaction, nil between Commit and Begin
	index uint32

	spansA, spansB []span
	evChunk        []broker.Event  // events are allocated eventChunk at a time
	colChunk       []broker.Column // so are the columns of rows,
	arena          []byte          // and the copies of message bodies

	// Begin and Commit are decoded into these (no allocation per message).
	begin  pglogrepl.BeginMessage
	commit pglogrepl.CommitMessage
}

// Chunk sizes of the decoder's allocations. Events, rows and message copies
// of consecutive changes share chunks: a chunk stays in memory while any
// event in it is retained, a few KiB more than the events themselves.
const (
	eventChunk  = 32
	columnChunk = 256     // broker.Column values (32 bytes each)
	arenaChunk  = 8 << 10 // bytes of message bodies
)

// txWithEvent allocates a transaction together with room for its first
// event pointer: most transactions change one row.
type txWithEvent struct {
	tx  broker.Tx
	evs [1]*broker.Event
}

func newDecoder(cat catalog, log zerolog.Logger) *decoder {
	return &decoder{
		cat:       cat,
		types:     pgtype.NewMap(),
		log:       log,
		rels:      make(map[uint32]*relation),
		typeCache: make(map[uint32]*colType),
	}
}

// inTx reports whether a transaction is open (Begin seen, Commit not yet).
func (d *decoder) inTx() bool { return d.tx != nil }

// reset forgets the open transaction and the relation cache (a new
// replication session resends relations).
func (d *decoder) reset() {
	d.tx = nil
	d.index = 0
	clear(d.rels)
}

// decode handles one pgoutput message. data is only read during the call.
func (d *decoder) decode(ctx context.Context, data []byte) (decoded, error) {
	if len(data) == 0 {
		return decoded{}, fmt.Errorf("empty pgoutput message")
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeInsert:
		return decoded{}, d.insert(data[1:])
	case pglogrepl.MessageTypeUpdate:
		return decoded{}, d.update(data[1:])
	case pglogrepl.MessageTypeDelete:
		return decoded{}, d.delete(data[1:])
	case pglogrepl.MessageTypeBegin:
		m := &d.begin
		if err := m.Decode(data[1:]); err != nil {
			return decoded{}, fmt.Errorf("parse pgoutput message %q: %w", data[0], err)
		}
		if d.tx != nil {
			return decoded{}, fmt.Errorf("begin of transaction %s inside transaction %s", m.FinalLSN, pglogrepl.LSN(d.tx.CommitLSN))
		}
		a := &txWithEvent{tx: broker.Tx{CommitLSN: uint64(m.FinalLSN), CommitTime: m.CommitTime.UTC()}}
		a.tx.Events = a.evs[:0]
		d.tx = &a.tx
		d.index = 0
		return decoded{}, nil
	case pglogrepl.MessageTypeCommit:
		m := &d.commit
		if err := m.Decode(data[1:]); err != nil {
			return decoded{}, fmt.Errorf("parse pgoutput message %q: %w", data[0], err)
		}
		if d.tx == nil {
			return decoded{}, fmt.Errorf("commit %s without begin", m.CommitLSN)
		}
		tx := d.tx
		d.tx = nil
		if uint64(m.CommitLSN) != tx.CommitLSN {
			return decoded{}, fmt.Errorf("commit LSN %s does not match begin's final LSN %s", m.CommitLSN, pglogrepl.LSN(tx.CommitLSN))
		}
		tx.EndLSN = uint64(m.TransactionEndLSN)
		return decoded{tx: tx}, nil
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return decoded{}, fmt.Errorf("parse pgoutput message %q: %w", data[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		return decoded{}, d.relation(ctx, m)
	case *pglogrepl.TypeMessage, *pglogrepl.OriginMessage:
		// Types are resolved from the catalog when a relation uses them;
		// origins do not matter to subscribers.
	case *pglogrepl.TruncateMessage:
		return decoded{}, d.truncate(m)
	case *pglogrepl.LogicalDecodingMessage:
		return d.message(m)
	default:
		d.log.Warn().Str("type", msg.Type().String()).Msg("ignoring unexpected pgoutput message")
	}
	return decoded{}, nil
}

func (d *decoder) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := &relation{
		id:        m.RelationID,
		replIdent: m.ReplicaIdentity,
		cols:      make([]relColumn, len(m.Columns)),
	}
	if m.Namespace == "public" {
		rel.collection = m.RelationName
	} else {
		rel.collection = m.Namespace + ":" + m.RelationName
	}
	for i, c := range m.Columns {
		t, err := d.colType(ctx, c.DataType)
		if err != nil {
			return err
		}
		rel.cols[i] = relColumn{name: c.Name, flags: c.Flags, typ: t}
	}
	keys, err := d.cat.KeyColumns(ctx, m)
	if err != nil {
		return fmt.Errorf("key columns of %s.%s: %w", m.Namespace, m.RelationName, err)
	}
	for _, k := range keys {
		for i := range rel.cols {
			if rel.cols[i].name == k {
				rel.keyIdx = append(rel.keyIdx, i)
				break
			}
		}
	}
	if len(rel.keyIdx) != len(keys) {
		// The catalog is ahead of the stream (a key column added or renamed
		// since): fall back on what pgoutput says below.
		rel.keyIdx = rel.keyIdx[:0]
	}
	if len(rel.keyIdx) == 0 && m.ReplicaIdentity != 'f' {
		// Table gone from the catalog: pgoutput's flags name the replica
		// identity (the primary key by default). Under FULL every column is
		// flagged, which is no record id.
		for i := range rel.cols {
			if rel.cols[i].flags&1 != 0 {
				rel.keyIdx = append(rel.keyIdx, i)
			}
		}
	}
	rel.types = make([]broker.ColumnType, len(rel.cols))
	for i := range rel.cols {
		rel.types[i] = broker.ColumnType{Name: rel.cols[i].name, Type: rel.cols[i].typ.name}
	}
	for _, k := range rel.keyIdx {
		rel.types[k].Key = true
	}
	d.rels[m.RelationID] = rel
	return nil
}

// colType resolves the conversion for oid, asking the catalog about types
// pgx does not know (domains, enum arrays, …).
func (d *decoder) colType(ctx context.Context, oid uint32) (*colType, error) {
	if t, ok := d.typeCache[oid]; ok {
		return t, nil
	}
	t, err := d.resolveType(ctx, oid, 0)
	if err != nil {
		return nil, err
	}
	named := *t // resolveType may return a shared colType
	if named.name, err = d.typeName(ctx, oid); err != nil {
		return nil, err
	}
	t = &named
	d.typeCache[oid] = t
	return t, nil
}

// typeName is oid's pg_type.typname: from pgx's type map for the types it
// knows, else from the catalog ("text" when the catalog does not know it).
func (d *decoder) typeName(ctx context.Context, oid uint32) (string, error) {
	if pt, ok := d.types.TypeForOID(oid); ok && pt.Name != "" {
		return pt.Name, nil
	}
	ti, err := d.cat.TypeInfo(ctx, oid)
	if err != nil {
		return "", fmt.Errorf("type %d: %w", oid, err)
	}
	if ti.Name == "" {
		return "text", nil
	}
	return ti.Name, nil
}

func (d *decoder) resolveType(ctx context.Context, oid uint32, depth int) (*colType, error) {
	if depth > 8 {
		return textType, nil
	}
	if k, ok := builtinKind(oid); ok {
		return &colType{oid: oid, kind: k}, nil
	}
	if pt, ok := d.types.TypeForOID(oid); ok {
		if ac, ok := pt.Codec.(*pgtype.ArrayCodec); ok && ac.ElementType != nil {
			elem, err := d.resolveType(ctx, ac.ElementType.OID, depth+1)
			if err != nil {
				return nil, err
			}
			delim := ac.Delimiter
			if delim == 0 {
				delim = ','
			}
			return &colType{oid: oid, kind: kindArray, elem: elem, delim: delim}, nil
		}
		return &colType{oid: oid, kind: kindText}, nil
	}
	if oid < 16384 {
		// A built-in type pgx has no codec for: its text form.
		return &colType{oid: oid, kind: kindText}, nil
	}
	ti, err := d.cat.TypeInfo(ctx, oid)
	if err != nil {
		return nil, fmt.Errorf("type %d: %w", oid, err)
	}
	switch {
	case ti.BaseOID != 0:
		base, err := d.resolveType(ctx, ti.BaseOID, depth+1)
		if err != nil {
			return nil, err
		}
		return &colType{oid: oid, kind: base.kind, elem: base.elem, delim: base.delim}, nil
	case ti.ElemOID != 0:
		elem, err := d.resolveType(ctx, ti.ElemOID, depth+1)
		if err != nil {
			return nil, err
		}
		delim := ti.Delim
		if delim == 0 {
			delim = ','
		}
		return &colType{oid: oid, kind: kindArray, elem: elem, delim: delim}, nil
	}
	return &colType{oid: oid, kind: kindText}, nil
}

func (d *decoder) rel(id uint32) (*relation, error) {
	rel, ok := d.rels[id]
	if !ok {
		return nil, fmt.Errorf("change for relation %d before its Relation message", id)
	}
	return rel, nil
}

func (d *decoder) newEvent(rel *relation, action string) (*broker.Event, error) {
	if d.tx == nil {
		return nil, fmt.Errorf("%s on %s outside a transaction", action, rel.collection)
	}
	d.index++
	if len(d.evChunk) == 0 {
		d.evChunk = make([]broker.Event, eventChunk)
	}
	ev := &d.evChunk[0]
	d.evChunk = d.evChunk[1:]
	*ev = broker.Event{
		Kind:        broker.KindRecord,
		Collection:  rel.collection,
		Action:      action,
		Timestamp:   d.tx.CommitTime,
		ColumnTypes: rel.types,
		Position:    broker.Position{LSN: d.tx.CommitLSN, Index: d.index},
	}
	d.tx.Events = append(d.tx.Events, ev)
	return ev, nil
}

// Insert: Int32 relid, 'N', TupleData.
func (d *decoder) insert(src []byte) error {
	if len(src) < 7 || src[4] != 'N' {
		return fmt.Errorf("malformed insert message")
	}
	rel, err := d.rel(binary.BigEndian.Uint32(src))
	if err != nil {
		return err
	}
	buf := d.clone(src[5:])
	var n int
	d.spansA, n, err = scanTuple(buf, d.spansA[:0], len(rel.cols))
	if err != nil || n != len(buf) {
		return fmt.Errorf("insert into %s: malformed tuple", rel.collection)
	}
	ev, err := d.newEvent(rel, broker.ActionCreate)
	if err != nil {
		return err
	}
	ev.Record, ev.UnchangedColumns = d.row(rel, buf, d.spansA, false)
	ev.RecordID = recordID(rel, buf, d.spansA)
	return nil
}

// Update: Int32 relid, optional ('K'|'O', TupleData), 'N', TupleData.
func (d *decoder) update(src []byte) error {
	if len(src) < 7 {
		return fmt.Errorf("malformed update message")
	}
	rel, err := d.rel(binary.BigEndian.Uint32(src))
	if err != nil {
		return err
	}
	buf := d.clone(src[4:])
	oldKind := buf[0]
	pos := 1
	hasOld := false
	if oldKind == 'K' || oldKind == 'O' {
		var n int
		d.spansB, n, err = scanTuple(buf[pos:], d.spansB[:0], len(rel.cols))
		if err != nil {
			return fmt.Errorf("update of %s: malformed old tuple", rel.collection)
		}
		for i := range d.spansB {
			d.spansB[i].off += pos
		}
		pos += n
		hasOld = true
		if pos >= len(buf) {
			return fmt.Errorf("update of %s: missing new tuple", rel.collection)
		}
		if buf[pos] != 'N' {
			return fmt.Errorf("update of %s: expected new tuple, got %q", rel.collection, buf[pos])
		}
		pos++
	} else if oldKind != 'N' {
		return fmt.Errorf("update of %s: unexpected tuple type %q", rel.collection, oldKind)
	}
	d.spansA, _, err = scanTuple(buf[pos:], d.spansA[:0], len(rel.cols))
	if err != nil {
		return fmt.Errorf("update of %s: malformed new tuple", rel.collection)
	}
	for i := range d.spansA {
		d.spansA[i].off += pos
	}
	ev, err := d.newEvent(rel, broker.ActionUpdate)
	if err != nil {
		return err
	}
	ev.Record, ev.UnchangedColumns = d.row(rel, buf, d.spansA, false)
	ev.RecordID = recordID(rel, buf, d.spansA)
	if hasOld {
		ev.OldRecord, _ = d.row(rel, buf, d.spansB, oldKind == 'K')
		if oldID := recordID(rel, buf, d.spansB); oldID != "" && oldID != ev.RecordID {
			ev.OldRecordID = oldID
		}
	}
	return nil
}

// Delete: Int32 relid, 'K'|'O', TupleData.
func (d *decoder) delete(src []byte) error {
	if len(src) < 7 || (src[4] != 'K' && src[4] != 'O') {
		return fmt.Errorf("malformed delete message")
	}
	rel, err := d.rel(binary.BigEndian.Uint32(src))
	if err != nil {
		return err
	}
	keyOnly := src[4] == 'K'
	buf := d.clone(src[5:])
	d.spansA, _, err = scanTuple(buf, d.spansA[:0], len(rel.cols))
	if err != nil {
		return fmt.Errorf("delete from %s: malformed tuple", rel.collection)
	}
	ev, err := d.newEvent(rel, broker.ActionDelete)
	if err != nil {
		return err
	}
	ev.Record, _ = d.row(rel, buf, d.spansA, keyOnly)
	ev.RecordID = recordID(rel, buf, d.spansA)
	return nil
}

func (d *decoder) truncate(m *pglogrepl.TruncateMessage) error {
	for _, id := range m.RelationIDs {
		rel, err := d.rel(id)
		if err != nil {
			return err
		}
		if _, err := d.newEvent(rel, broker.ActionTruncate); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) message(m *pglogrepl.LogicalDecodingMessage) (decoded, error) {
	if m.Prefix != MessagePrefix {
		return decoded{}, nil
	}
	p, err := ParseCustomPayload(m.Content)
	if err != nil {
		metrics.BadPayloads.WithLabelValues("wal").Inc()
		d.log.Warn().Str("source", "wal").Str("lsn", m.LSN.String()).Err(err).
			Msg("ignoring malformed pgrealtime.broadcast payload")
		return decoded{}, nil
	}
	if !m.Transactional || d.tx == nil {
		return decoded{live: p.ToEvent(timeNow(), broker.Position{})}, nil
	}
	d.index++
	ev := p.ToEvent(d.tx.CommitTime, broker.Position{LSN: d.tx.CommitLSN, Index: d.index})
	d.tx.Events = append(d.tx.Events, ev)
	return decoded{}, nil
}

// clone copies a message body once; every string and json value of the
// event then points into this copy (events are immutable). Small bodies are
// copied into the decoder's current arena chunk.
func (d *decoder) clone(src []byte) []byte {
	if len(src) > arenaChunk/4 {
		buf := make([]byte, len(src))
		copy(buf, src)
		return buf
	}
	if cap(d.arena)-len(d.arena) < len(src) {
		d.arena = make([]byte, 0, arenaChunk)
	}
	n := len(d.arena)
	d.arena = append(d.arena, src...)
	return d.arena[n:len(d.arena):len(d.arena)]
}

// newRow returns an empty row with room for n columns, from the decoder's
// current column chunk when it is small.
func (d *decoder) newRow(n int) broker.Row {
	if n == 0 || n > columnChunk/8 {
		return make(broker.Row, 0, n)
	}
	if cap(d.colChunk)-len(d.colChunk) < n {
		d.colChunk = make([]broker.Column, 0, columnChunk)
	}
	l := len(d.colChunk)
	d.colChunk = d.colChunk[:l+n]
	return d.colChunk[l : l : l+n]
}

// scanTuple reads a TupleData (Int16 ncols, then per column 'n' | 'u' |
// ('t'|'b', Int32 len, bytes)) and appends one span per column. It returns
// the number of bytes read.
func scanTuple(src []byte, spans []span, want int) ([]span, int, error) {
	if len(src) < 2 {
		return spans, 0, fmt.Errorf("short tuple")
	}
	n := int(binary.BigEndian.Uint16(src))
	if n != want {
		return spans, 0, fmt.Errorf("tuple has %d columns, relation %d", n, want)
	}
	p := 2
	for i := 0; i < n; i++ {
		if p >= len(src) {
			return spans, 0, fmt.Errorf("short tuple")
		}
		k := src[p]
		p++
		switch k {
		case 'n', 'u':
			spans = append(spans, span{kind: k})
		case 't', 'b':
			if p+4 > len(src) {
				return spans, 0, fmt.Errorf("short tuple")
			}
			l := int(binary.BigEndian.Uint32(src[p:]))
			p += 4
			if l < 0 || p+l > len(src) {
				return spans, 0, fmt.Errorf("short tuple")
			}
			spans = append(spans, span{kind: k, off: p, len: l})
			p += l
		default:
			return spans, 0, fmt.Errorf("unknown tuple column kind %q", k)
		}
	}
	return spans, p, nil
}

// str returns the span's bytes as a string without copying: buf is the
// event's private, never-modified arena.
func str(buf []byte, s span) string {
	if s.len == 0 {
		return ""
	}
	return unsafe.String(&buf[s.off], s.len)
}

// row builds the record from spans. keyOnly keeps only the replica
// identity columns (an old key tuple 'K', whose other columns are null).
// Unchanged TOAST columns are left out and listed.
func (d *decoder) row(rel *relation, buf []byte, spans []span, keyOnly bool) (broker.Row, []string) {
	n := len(spans)
	if keyOnly {
		n = 0
		for i := range spans {
			if rel.cols[i].flags&1 != 0 {
				n++
			}
		}
	}
	row := d.newRow(n)
	var unchanged []string
	for i, s := range spans {
		c := &rel.cols[i]
		if keyOnly && c.flags&1 == 0 {
			continue
		}
		switch s.kind {
		case 'n':
			row = append(row, broker.Column{Name: c.name})
		case 'u':
			unchanged = append(unchanged, c.name)
		default:
			row = append(row, broker.Column{Name: c.name, Value: d.convert(c.typ, str(buf, s))})
		}
	}
	return row, unchanged
}

// recordID joins the text of the key columns with ","; "" when the table
// has no key or a key column is missing from the tuple.
func recordID(rel *relation, buf []byte, spans []span) string {
	switch len(rel.keyIdx) {
	case 0:
		return ""
	case 1:
		s := spans[rel.keyIdx[0]]
		if s.kind != 't' && s.kind != 'b' {
			return ""
		}
		return str(buf, s)
	}
	var sb strings.Builder
	for j, i := range rel.keyIdx {
		s := spans[i]
		if s.kind != 't' && s.kind != 'b' {
			return ""
		}
		if j > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(str(buf, s))
	}
	return sb.String()
}
