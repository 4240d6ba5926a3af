package cdc

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgtype"
)

// valueKind says how a column's text form becomes a broker.Column value.
type valueKind uint8

const (
	kindText        valueKind = iota // the Postgres text form, as a string
	kindInt                          // int2/int4/int8 → int64
	kindFloat                        // float4/float8 → float64; NaN/±Infinity → string
	kindNumeric                      // numeric → json.Number; NaN/±Infinity → string
	kindBool                         // bool
	kindJSON                         // json/jsonb → json.RawMessage
	kindTimestamptz                  // timestamptz → RFC 3339 UTC string
	kindBytea                        // bytea → base64 string
	kindArray                        // array → []any of elem
)

// colType is the resolved conversion for one column type. colTypes are
// shared and immutable once built.
type colType struct {
	oid   uint32
	kind  valueKind
	elem  *colType // kindArray
	delim byte     // kindArray
	name  string   // pg_type.typname (set on the column's own type only)
}

var textType = &colType{kind: kindText}

var (
	tstzCodec  pgtype.Codec = &pgtype.TimestamptzCodec{}
	byteaCodec pgtype.Codec = pgtype.ByteaCodec{}
)

// builtinKind classifies the built-in scalar OIDs that are not plain text.
func builtinKind(oid uint32) (valueKind, bool) {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		return kindInt, true
	case pgtype.Float4OID, pgtype.Float8OID:
		return kindFloat, true
	case pgtype.NumericOID:
		return kindNumeric, true
	case pgtype.BoolOID:
		return kindBool, true
	case pgtype.JSONOID, pgtype.JSONBOID:
		return kindJSON, true
	case pgtype.TimestamptzOID:
		return kindTimestamptz, true
	case pgtype.ByteaOID:
		return kindBytea, true
	}
	return kindText, false
}

// convert turns the text form s of a value of type t into a broker.Column
// value. raw is the same bytes as s (s may alias raw: both are immutable
// once the event is built). A value that does not parse as its type is
// passed on as its text (it never stops the stream).
func (d *decoder) convert(t *colType, s string) any {
	switch t.kind {
	case kindText:
		return s
	case kindInt:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return s
		}
		return n
	case kindFloat:
		switch s {
		case "NaN", "Infinity", "-Infinity":
			return s
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			// ParseFloat also takes "inf", "nan", …: JSON cannot carry
			// those as numbers, and an unencodable value would cost the
			// whole event.
			return s
		}
		return f
	case kindNumeric:
		switch s {
		case "NaN", "Infinity", "-Infinity":
			return s
		}
		return json.Number(s)
	case kindBool:
		return s == "t"
	case kindJSON:
		// No copy: s is immutable (the event's arena) and so is the event.
		return json.RawMessage(unsafe.Slice(unsafe.StringData(s), len(s)))
	case kindTimestamptz:
		return d.timestamptz(s)
	case kindBytea:
		return d.bytea(s)
	case kindArray:
		v, err := parseArray(s, t.delim, d, t.elem)
		if err != nil {
			return s
		}
		return v
	}
	return s
}

// pgTimestamptzLayout matches Postgres's ISO output with the session in UTC
// (the reader sets TimeZone=UTC on its replication connection).
const (
	pgTimestamptzLayout = "2006-01-02 15:04:05.999999999-07"
	pgTimestampLayout   = "2006-01-02 15:04:05.999999999"
)

func (d *decoder) timestamptz(s string) any {
	if n := len(s); n > 3 && s[n-3:] == "+00" {
		// UTC, the replication session's time zone: no zone to allocate.
		if t, err := time.ParseInLocation(pgTimestampLayout, s[:n-3], time.UTC); err == nil {
			return t.Format(time.RFC3339Nano)
		}
	}
	if t, err := time.Parse(pgTimestamptzLayout, s); err == nil {
		return t.UTC().Format(time.RFC3339Nano)
	}
	// Other offsets, infinity, BC dates: pgx's codec.
	v, err := tstzCodec.DecodeValue(d.types, pgtype.TimestamptzOID, pgtype.TextFormatCode, []byte(s))
	if err != nil {
		return s
	}
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case pgtype.InfinityModifier:
		if x == pgtype.Infinity {
			return "infinity"
		}
		return "-infinity"
	}
	return s
}

func (d *decoder) bytea(s string) any {
	if strings.HasPrefix(s, `\x`) {
		h := s[2:]
		b := make([]byte, hex.DecodedLen(len(h)))
		if _, err := hex.Decode(b, []byte(h)); err == nil {
			return base64.StdEncoding.EncodeToString(b)
		}
		return s
	}
	// bytea_output = escape: let pgx's codec undo it.
	v, err := byteaCodec.DecodeValue(d.types, pgtype.ByteaOID, pgtype.TextFormatCode, []byte(s))
	if b, ok := v.([]byte); ok && err == nil {
		return base64.StdEncoding.EncodeToString(b)
	}
	return s
}

var errBadArray = errors.New("malformed array text")

// parseArray parses Postgres's array output ("{1,2,NULL}", "{{a,b},{c,d}}",
// `{"x y","q\"z"}`, "[0:1]={1,2}") into nested []any, converting each
// non-NULL element as elem.
func parseArray(s string, delim byte, d *decoder, elem *colType) ([]any, error) {
	if len(s) > 0 && s[0] == '[' {
		// Dimension decoration: "[1:2][1:3]={...}".
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errBadArray
		}
		s = s[eq+1:]
	}
	p := arrayParser{s: s, delim: delim, d: d, elem: elem}
	v, err := p.parse()
	if err != nil {
		return nil, err
	}
	if p.i != len(s) {
		return nil, errBadArray
	}
	return v, nil
}

type arrayParser struct {
	s     string
	i     int
	delim byte
	d     *decoder
	elem  *colType
}

func (p *arrayParser) parse() ([]any, error) {
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, errBadArray
	}
	p.i++
	out := make([]any, 0, 4)
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return out, nil
	}
	for {
		if p.i >= len(p.s) {
			return nil, errBadArray
		}
		switch p.s[p.i] {
		case '{':
			sub, err := p.parse()
			if err != nil {
				return nil, err
			}
			out = append(out, sub)
		case '"':
			p.i++
			start := p.i
			var sb *strings.Builder
			for {
				if p.i >= len(p.s) {
					return nil, errBadArray
				}
				c := p.s[p.i]
				if c == '"' {
					break
				}
				if c == '\\' {
					if sb == nil {
						sb = &strings.Builder{}
						sb.WriteString(p.s[start:p.i])
					}
					p.i++
					if p.i >= len(p.s) {
						return nil, errBadArray
					}
					c = p.s[p.i]
				}
				if sb != nil {
					sb.WriteByte(c)
				}
				p.i++
			}
			elem := p.s[start:p.i]
			if sb != nil {
				elem = sb.String()
			}
			p.i++ // closing quote
			out = append(out, p.d.convert(p.elem, elem))
		default:
			start := p.i
			for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
				p.i++
			}
			tok := p.s[start:p.i]
			if tok == "" {
				return nil, errBadArray
			}
			if len(tok) == 4 && strings.EqualFold(tok, "NULL") {
				out = append(out, nil)
			} else {
				out = append(out, p.d.convert(p.elem, tok))
			}
		}
		if p.i >= len(p.s) {
			return nil, errBadArray
		}
		switch p.s[p.i] {
		case p.delim:
			p.i++
		case '}':
			p.i++
			return out, nil
		default:
			return nil, errBadArray
		}
	}
}
