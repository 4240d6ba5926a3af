// Package cdc streams committed Postgres changes from a logical replication
// slot (pgoutput, proto_version 1) to a broker.Publisher, and custom events
// from NOTIFY to a broker.LivePublisher.
//
// Guarantees:
//
//   - Every INSERT, UPDATE, DELETE and TRUNCATE committed on a published
//     table, and every pgrealtime.broadcast (pg_logical_emit_message with
//     prefix "pgrealtime"), reaches Publisher.Append as part of its transaction,
//     in commit order, the events of a transaction in WAL order. Each event's
//     Position is <commit LSN>:<1-based index>, strictly increasing.
//   - Transactions are handed over whole and one at a time; a transaction
//     that touched no published table may be left out.
//   - Every replication session starts with Publisher.Begin(<the slot's
//     confirmed_flush_lsn>:0), after the slot exists and before the first
//     Append.
//   - The flush position acknowledged to Postgres never passes what
//     Publisher.Durable allows (called at every status tick and when
//     Postgres asks for a reply, so acknowledgements move when idle), and
//     so never a transaction Append has not accepted or the broker has not
//     made durable: the slot re-sends, after any crash or
//     reconnection, everything after the acknowledged LSN. A transaction may
//     therefore be handed over twice (same positions); within one Reader,
//     transactions at or before the last one published are not handed over
//     again. If Append or Durable fails, nothing more is acknowledged and
//     the reader reconnects and retries: nothing is skipped. Append may
//     block (backpressure): it is called with a deadline of one
//     StatusInterval, and while it is blocked the reader sends standby
//     status and retries, so wal_sender_timeout does not end the session.
//   - Resume across restarts (PROTOCOL section 7), when Config.Checkpoint is
//     set (single node; in cluster mode the history lives in Redis and the
//     reader writes and reads no checkpoint and holds nothing back). The
//     Checkpoint keeps a window of recent events (Checkpoint.Retained). While the WAL written since the
//     window's oldest transaction is within ResumeWALLimit, the reader
//     acknowledges only up to that transaction, so that after a restart the
//     slot streams the whole window again and the broker rebuilds it. Before
//     an acknowledgement, the reader writes to pgrealtime.checkpoint the
//     base (the last event before what the slot will stream again) and the
//     last event delivered; on start it calls Checkpoint.SetBase(base) and
//     Checkpoint.MarkDelivered(delivered) before publishing anything: every event
//     after base is streamed again, those up to delivered are retained but
//     not delivered live twice. Past ResumeWALLimit (published tables idle,
//     other tables written), the slot follows what was published and the
//     server's WAL end, so Postgres never retains WAL without bound; a
//     restart then resumes only from the last event published.
//   - Standby status is sent every StatusInterval and at once when Postgres
//     asks for it (with the position already acknowledged).
//   - Latency: a transaction is handed over as soon as its commit message
//     is read, except under dense traffic (transactions less than a quarter
//     of BatchWindow apart, default 1 ms), where the reader pauses up to
//     BatchWindow after a transaction before it reads again, so that the
//     next ones are read and handed over together. It never pauses while
//     received data waits (catching up).
//   - A dead path to Postgres (no packets, no close) ends the session within
//     about StatusInterval + ServerTimeout + 2 s: the reader asks for a
//     reply when the stream is silent, and when none comes checks over its
//     regular connection that the walsender is not merely busy. On
//     reconnection, a slot still held by a walsender of this Reader's own
//     earlier connection (its application_name carries the Reader's run id)
//     is freed with pg_terminate_backend; a slot held by anything else is
//     never touched (ErrSlotInUse, retried with backoff).
//   - NOTIFY events are live only: delivered with PublishLive, not
//     positioned, lost while the reader is disconnected.
//   - Malformed custom payloads are logged and counted, never delivered,
//     and never stop the stream.
//
// Publications: unless a publication named Config.Publication already
// exists without the "managed by pgrealtime" comment, the reader manages
// two: <publication> with every user table that has a primary key or a
// replica identity, and <publication>_insert_only (publish = 'insert,
// truncate') with the tables that have neither, because Postgres rejects
// UPDATE and DELETE on a table published for them without a replica
// identity. sql/setup.sql installs, when the role may create event triggers
// (a superuser), the event trigger TriggerName, which adds each table
// created (or moves one altered) to the right managed publication in the
// transaction of the DDL: its rows are streamed from the first one. Without
// it the reader logs so once, and a new table is published only at the next
// re-sync (every SyncInterval: 30 s with the trigger, 2 s without), rows
// written before then being lost.
//
// Start position: before publishing anything, the reader calls
// Checkpoint.SetBase with the checkpoint's base or, without one, with the slot's
// confirmed position <LSN>:0: the position subscribers are given before the
// first event, after which everything is streamed.
//
// Record ids come from the primary key (else the REPLICA IDENTITY USING
// INDEX index) as read from the catalog when a Relation message arrives. The
// catalog is the current one: while catching up on old WAL after a key was
// redefined, ids follow the new definition.
package cdc
