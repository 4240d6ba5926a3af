// Package cluster holds the building blocks of cluster mode (docs/cluster.md):
// the Elector, which decides which node reads the WAL, and the Registry,
// which tells every node (and GET /api/cluster) which nodes there are.
//
// Nothing uses this package yet: the Elector is step 7 of the build plan in
// docs/cluster.md, the Registry part of step 8, and both are wired into
// cmd/pgrealtime in step 8. It imports neither wsapi nor broker; it needs
// pgx (Elector) and the process's rueidis client (Registry).
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
// # Registry
//
// Every node runs Registry.Run. Each heartbeat (1 s) it writes its entry to
// the hash NodesKey(slot) = pgrealtime:{<slot>}:nodes, field = node id,
// value = {"role":"leader"|"follower","connections":N,"seen":"<RFC 3339 UTC>"}.
// While IsLeader reports true it also sets LeaderKey(slot) =
// pgrealtime:{<slot>}:leader to its id with a 5 s expiry, and deletes that
// key (only while it still holds this node's id: a compare-and-delete
// script) when it stops leading and when Run ends. The leader deletes
// entries older than 1 min and values that are not entries. View returns
// the leader key and the entries seen within 5 s, sorted by id.
//
// Guarantees: the leader key is informational (the lock in Postgres
// decides); a node that dies leaves the view 5 s after its last heartbeat
// and the key names it for at most 5 s. A Redis error never ends Run: it is
// logged once, retried every heartbeat, and View returns it to its caller.
// Every heartbeat sets pgrealtime_cluster_nodes to the fresh entries.
//
// The lock needs a direct connection (or a session-mode pooler): with a
// transaction-mode pooler a session-level advisory lock is meaningless.
package cluster
