// Package metrics holds pgrealtime's Prometheus metrics, registered on one
// registry that `GET /metrics` serves. Every component increments the
// metrics here, so names and labels are defined in one place.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Registry is what /metrics serves.
var Registry = prometheus.NewRegistry()

const ns = "pgrealtime"

var (
	// Connections: WebSocket connections from their connected message until
	// their teardown ends.
	Connections = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "connections", Help: "WebSocket connections open now (from the connected message until the teardown ends)."})
	// Subscriptions: topic patterns held, summed over connections.
	Subscriptions = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "subscriptions", Help: "Topic patterns subscribed now, summed over connections (a pattern a connection subscribes to twice counts once)."})
	// EventsReceived: events taken in, by source.
	EventsReceived = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_received_total", Help: "Events taken in, by source: wal (the events of each WAL transaction published to the broker, once even when the transaction is sent again after a reconnect, and pgrealtime.broadcast messages written outside a transaction), notify (valid NOTIFY payloads), http (valid POST /api/broadcast bodies), supabase (client broadcasts allowed on /realtime/v1/websocket)."}, []string{"source"})
	// EventsDelivered: frames of events written to subscribers' sockets
	// (counted in wsapi once the frame is written or buffered for the
	// socket's next write).
	EventsDelivered = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_delivered_total", Help: "Events written to subscribers' sockets, one per event and subscriber, replays included (events still queued when a connection closes are not counted), by action (create, update, delete, truncate, custom)."}, []string{"action"})
	// EventsDroppedByRules: read and rule_error per subscriber (wsapi/rules
	// Allow), events_false once per event (Prepare).
	EventsDroppedByRules = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_dropped_by_rules_total", Help: "Events withheld by rules, by reason: read (a subscriber's read rule denied the event, or its collection has no read rule; once per subscriber), rule_error (the read rule failed to evaluate; once per subscriber), events_false (the collection has events: false; once per event, whatever the subscribers)."}, []string{"reason"})
	// SlowConsumerCloses: connections closed with 4008, for either cause.
	SlowConsumerCloses = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "slow_consumer_closes_total", Help: "Connections closed with 4008: their send queue overflowed, or a write to their socket did not finish within the write timeout."})
	// RateLimited: subscribe and unsubscribe requests over the per-connection rate.
	RateLimited = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_requests_total", Help: "Subscribe and unsubscribe requests refused with rate_limited."})
	// TokensRejected: refused tokens by reason.
	TokensRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "tokens_rejected_total", Help: "Tokens refused (when connecting, in auth messages and on the HTTP API), by reason (invalid, expired)."}, []string{"reason"})
	// ReplicationLagBytes: the server's reported end of WAL minus the start
	// of the last message received.
	ReplicationLagBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "replication_lag_bytes", Help: "WAL bytes between the end of WAL the server last reported and the start of the last message received from it (0 after a keepalive received outside a transaction)."})
	// LastCommitTimestamp: the commit time of the last transaction received.
	LastCommitTimestamp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "last_commit_timestamp_seconds", Help: "Unix time of the commit of the last transaction received on the stream (compare with time() for lag)."})
	// ReplicationLagSeconds: commit to hand-over to the broker, of the last
	// transaction published.
	ReplicationLagSeconds = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "replication_lag_seconds", Help: "Seconds from the commit of the last transaction published to the broker (Postgres's clock) to its publication (this process's clock)."})
	// SlotRetainedBytes: WAL the slot keeps the server from recycling.
	SlotRetainedBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "slot_retained_wal_bytes", Help: "WAL bytes retained by the replication slot (pg_current_wal_lsn() - restart_lsn), read periodically while streaming."})
	// Reconnects: retries after a lost or failed connection to Postgres.
	Reconnects = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "reconnects_total", Help: "Connections to Postgres lost or not made, each followed by a retry after a backoff, by connection (replication, notify)."}, []string{"conn"})
	// BadPayloads: refused custom events by source.
	BadPayloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bad_payloads_total", Help: "Custom events refused as malformed, by source: notify and wal (NOTIFY and pgrealtime.broadcast payloads, ignored), http (POST /api/broadcast requests answered 400)."}, []string{"source"})
	// RuleErrors: read-rule evaluation errors per subscriber and event.
	RuleErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rule_errors_total", Help: "Read-rule evaluation errors, once per subscriber and event (the event is withheld from that subscriber), by collection."}, []string{"collection"})
	// Transactions: WAL transactions with events published to the broker.
	Transactions = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "transactions_total", Help: "WAL transactions with at least one event published to the broker (once even when sent again after a reconnect)."})
	// StreamConnected: 1 while the replication stream runs.
	StreamConnected = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "stream_connected", Help: "1 from the start of replication until the stream fails or stops, else 0."})
)

func init() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		Connections, Subscriptions, EventsReceived, EventsDelivered, EventsDroppedByRules,
		SlowConsumerCloses, RateLimited, TokensRejected, ReplicationLagBytes, LastCommitTimestamp,
		ReplicationLagSeconds, SlotRetainedBytes, Reconnects, BadPayloads, RuleErrors, Transactions,
		StreamConnected,
	)
}
