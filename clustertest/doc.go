// Package clustertest is the end-to-end suite of cluster mode (PROTOCOL
// section 8; the test plan of docs/cluster.md section 14). It holds only
// tests: three real pgrealtime processes (internal/proctest) on one
// throwaway Postgres (internal/pgtest) and one Redis with AOF
// (internal/redistest), 30 clients of the Go client package spread round
// robin over the nodes, and a writer committing rows with a sequence column
// at a steady rate.
//
// What it checks, under that load, through a leader SIGKILL and SIGTERM, a
// Redis restart with and without its data, every node's Postgres sessions
// ended, and all nodes restarted at once: every client receives every row
// exactly once, in sequence order, with the same position on every node;
// a missing row is accepted only right after the client's gap event (the
// server's history_unavailable), never silently. Takeover times are logged
// (go test -v) and held to PROTOCOL 8's bounds (10 s after SIGKILL, 2 s
// after SIGTERM). NOTIFY and POST /api/broadcast events reach subscribers
// on every node once each.
//
// Clients reach the nodes through a dialer that plays the load balancer of
// a real deployment with a health check: each client prefers its home node,
// and when that node is not ready (/readyz) it goes to the next ready one.
package clustertest
