package cdc

import (
	"context"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// timeNow is the clock for live events (a variable for tests).
var timeNow = time.Now

// pgCatalog answers catalog questions on a regular connection. Results are
// cached by the decoder (per relation message / per type OID).
type pgCatalog struct {
	conn *pgx.Conn
}

const keyColumnsSQL = `
SELECT i.indisprimary, a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1::oid AND (i.indisprimary OR i.indisreplident)
ORDER BY i.indisprimary DESC, i.indexrelid, k.ord`

func (c *pgCatalog) KeyColumns(ctx context.Context, rel *pglogrepl.RelationMessage) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := c.conn.Query(ctx, keyColumnsSQL, rel.RelationID)
	if err != nil {
		return nil, err
	}
	var (
		keys    []string
		primary bool
		first   = true
	)
	for rows.Next() {
		var isPK bool
		var name string
		if err := rows.Scan(&isPK, &name); err != nil {
			return nil, err
		}
		if first {
			primary, first = isPK, false
		}
		if isPK == primary {
			keys = append(keys, name)
		}
	}
	return keys, rows.Err()
}

const typeInfoSQL = `
SELECT t.typname::text, t.typtype::text, t.typbasetype, t.typelem, t.typcategory::text, coalesce(e.typdelim::text, ',')
FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
WHERE t.oid = $1::oid`

func (c *pgCatalog) TypeInfo(ctx context.Context, oid uint32) (typeInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var (
		name, typtype, category, delim string
		base, elem                     uint32
	)
	err := c.conn.QueryRow(ctx, typeInfoSQL, oid).Scan(&name, &typtype, &base, &elem, &category, &delim)
	if err == pgx.ErrNoRows {
		return typeInfo{}, nil
	}
	if err != nil {
		return typeInfo{}, err
	}
	switch {
	case typtype == "d":
		return typeInfo{Name: name, BaseOID: base}, nil
	case category == "A" && elem != 0:
		ti := typeInfo{Name: name, ElemOID: elem, Delim: ','}
		if len(delim) == 1 {
			ti.Delim = delim[0]
		}
		return ti, nil
	}
	return typeInfo{Name: name}, nil
}
