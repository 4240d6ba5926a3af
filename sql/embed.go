// Package sql holds pgrealtime's SQL scripts, embedded in the binary.
// Importers alias it (e.g. pgsql "github.com/pgrealtime/pgrealtime/sql").
package sql

import _ "embed"

// Setup is sql/setup.sql: the pgrealtime schema, the checkpoint table and
// pgrealtime.broadcast. It is idempotent.
//
//go:embed setup.sql
var Setup string

// Demo is sql/demo.sql: the demo schema and rows loaded by `pgrealtime dev`.
//
//go:embed demo.sql
var Demo string
