// Package redisbroker is the multi-node broker (cluster mode, PROTOCOL
// section 8; the design is docs/cluster.md). Redis holds one stream per
// replication slot; exactly one node (the leader, elected in Postgres)
// appends the WAL's transactions to it, and every node fans out what is in
// it locally: the others read it back, the leader applies the transactions
// it appended once Redis confirmed them, as long as they directly follow
// what it applied (local.go), and reads the stream otherwise.
//
// Guarantees:
//   - Order: an entry holds up to 64 consecutive events of one transaction
//     (entry.go) and its id is its last event's position ("<commit
//     LSN>-<index>"), so stream order is commit order. Every node applies
//     the stream in id order, one whole transaction at a time (events are
//     assembled until the one whose index is the transaction's last), from
//     one goroutine.
//   - Exactly once in the stream: Begin reads the stream's last id L and
//     Append skips events at or before it; Redis refuses an id that is not
//     after its last one (the appender then re-reads L and goes on when the
//     entry is there). A transaction half-appended by a dead leader is
//     completed, not repeated. Each node reads from its last id, so it
//     applies each entry once.
//   - Never a silent gap: each entry carries its predecessor p (or a base
//     "<LSN>-0" when the leader cannot vouch for one: the flushed watermark
//     W is below where the slot starts, or the stream is gone). A node whose
//     last applied id differs from p, or that skipped an entry it could not
//     decode, resets its history to p (subscribers get Resync and resume
//     with since, which answers history_unavailable before p) and counts it
//     in pgrealtime_cluster_resets_total.
//   - Acknowledgement: Durable never reports a position past a transaction
//     Redis has not confirmed, nor past the watermark W the appender wrote
//     (a Lua script that only raises it) after the events it covers. With
//     WAITAOF (Redis ≥ 7.2 with appendonly) "confirmed" means on disk; with
//     Redis 7.0 it means accepted, so run Redis with appendfsync always for
//     nothing lost.
//   - Trimming: the stream keeps the newest entries that hold HistorySize
//     events (entries from before the session count as one event each)
//     plus everything appended in the last TrimGrace (10 s), so that a
//     burst (one
//     transaction larger than the history) does not overtake the nodes
//     reading it; a node more than that behind resets, as above.
//   - Backpressure: Append queues at most MaxQueueBytes of encoded payload
//     (queued plus in flight) and blocks beyond it until its ctx ends. One
//     goroutine sends group-committed batches (whatever accumulated while
//     the previous batch was in flight) in one round trip each on a
//     dedicated connection.
//   - Failures: a failed batch ends the append session (Append and Durable
//     return its error; the reader streams again from its acknowledgement
//     and calls Begin). The follower and live loops retry Redis errors with
//     backoff (100 ms doubling to 2 s) and continue from the last applied
//     id; meanwhile Ready reports why. Live events (PUBLISH on the live
//     channel, one dedicated subscription per node) are best effort: those
//     published while a node's subscription reconnects are lost to it.
//
// Keys (Config.Slot = S): pgrealtime:{S}:stream (entries: p, e = the
// entry payload of entry.go, whose events are the broker codec's
// payloads), :flushed (W, 16 hex digits), :origin, :format ("2"), :live
// (pub/sub channel: one codec payload per message).
package redisbroker
