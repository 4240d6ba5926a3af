// Package cluster holds the building blocks of cluster mode (docs/cluster.md):
// for now the Elector, which decides which node reads the WAL.
//
// Nothing uses this package yet: it is step 7 of the build plan in
// docs/cluster.md and is wired into cmd/pgrealtime in step 8. It imports
// neither wsapi nor broker; it only needs pgx.
//
// # Election
//
// Every node runs Elector.Run. The leader is the node whose dedicated
// Postgres session holds the session-level advisory lock LockKey(slot)
// (the first 8 bytes of SHA-256 of "pgrealtime slot " + slot). The session
// is a pgx.Conn of its own, never a pool, opened with the runtime parameters
// of docs/cluster.md section 8 (application_name=pgrealtime-leader:<node id>,
// idle_session_timeout=0, statement_timeout=0, tcp_keepalives_idle=2,
// tcp_keepalives_interval=1, tcp_keepalives_count=2, tcp_user_timeout=4000,
// client_connection_check_interval=1000), so that Postgres ends it, and the
// lock with it, within a few seconds of losing the node.
//
// Guarantees:
//
//   - Followers wait inside Postgres, blocked in pg_advisory_lock: the lock
//     is granted the moment the leader's session ends, with no polling delay.
//   - lead runs only while the lock is held. Its context ends when Run's
//     context ends, when the lock session fails its health check (SELECT 1
//     every CheckInterval with a CheckTimeout deadline: at most 2.5 s after
//     the session is lost, with the defaults), or when Config.Ready has
//     failed for ReadyGrace. context.Cause tells which (ErrSessionLost,
//     ErrNotReady).
//   - When lead returns, the session is closed, which releases the lock
//     (step-down); lead is therefore over before another node can lead,
//     unless the session was lost first, which is why the replication slot,
//     not this lock, is the hard guarantee of a single reader.
//   - The Elector never ends any session but its own: no
//     pg_terminate_backend, of a leader or of anything else. A follower only
//     waits.
//
// The lock needs a direct connection (or a session-mode pooler): with a
// transaction-mode pooler a session-level advisory lock is meaningless.
package cluster
