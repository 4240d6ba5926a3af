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
	// Connections is the number of open WebSocket connections.
	Connections = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "connections", Help: "Open WebSocket connections."})
	// Subscriptions is the number of active topic subscriptions.
	Subscriptions = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "subscriptions", Help: "Active topic subscriptions over all connections."})
	// EventsReceived counts events by source: wal, notify, http.
	EventsReceived = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_received_total", Help: "Events received, by source (wal, notify, http)."}, []string{"source"})
	// EventsDelivered counts messages written to sockets, by action
	// (create, update, delete, truncate, custom).
	EventsDelivered = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_delivered_total", Help: "Events queued to subscribers, by action (create, update, delete, truncate, custom)."}, []string{"action"})
	// EventsDroppedByRules counts per-subscriber deliveries withheld by a read
	// rule, and events never broadcast (events: false).
	EventsDroppedByRules = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_dropped_by_rules_total", Help: "Deliveries withheld by rules, by reason (read, events_false, rule_error)."}, []string{"reason"})
	// SlowConsumerCloses counts connections closed with 4008.
	SlowConsumerCloses = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "slow_consumer_closes_total", Help: "Connections closed with 4008 because their send queue overflowed."})
	// RateLimited counts subscribe/unsubscribe requests refused by the rate limit.
	RateLimited = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_requests_total", Help: "Client requests refused with rate_limited."})
	// TokensRejected counts refused tokens by reason.
	TokensRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "tokens_rejected_total", Help: "Tokens refused, by reason (invalid, expired)."}, []string{"reason"})
	// ReplicationLagBytes is the server's current WAL position minus the last
	// position received.
	ReplicationLagBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "replication_lag_bytes", Help: "Bytes of WAL the server has written beyond what pgrealtime has received."})
	// LastCommitSeconds is seconds since the last commit seen on the stream.
	LastCommitTimestamp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "last_commit_timestamp_seconds", Help: "Unix time of the last commit seen on the stream (compare with time() for lag)."})
	// ReplicationLagSeconds is the age of the last published commit when it was published.
	ReplicationLagSeconds = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "replication_lag_seconds", Help: "Seconds between the last transaction's commit and its publication to subscribers."})
	// SlotRetainedBytes is the WAL the slot keeps the server from recycling.
	SlotRetainedBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "slot_retained_wal_bytes", Help: "WAL bytes retained by the replication slot (pg_current_wal_lsn() - restart_lsn)."})
	// Reconnects counts reconnections by connection kind: replication, notify.
	Reconnects = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "reconnects_total", Help: "Reconnections to Postgres, by connection (replication, notify)."}, []string{"conn"})
	// BadPayloads counts malformed custom-event payloads by source.
	BadPayloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bad_payloads_total", Help: "Malformed custom-event payloads, by source (notify, wal, http)."}, []string{"source"})
	// RuleErrors counts CEL evaluation errors (the record is denied).
	RuleErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rule_errors_total", Help: "Rule evaluation errors (the event is withheld from that subscriber), by collection."}, []string{"collection"})
	// Transactions counts WAL transactions published.
	Transactions = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "transactions_total", Help: "WAL transactions published to the broker."})
	// StreamConnected is 1 while the WAL stream is connected.
	StreamConnected = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "stream_connected", Help: "1 while the replication stream is connected."})
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
