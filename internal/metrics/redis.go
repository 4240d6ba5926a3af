package metrics

import "github.com/prometheus/client_golang/prometheus"

// Cluster mode's Redis metrics (package broker/redisbroker).
var (
	// RedisBatchSeconds: one append batch (XADDs, XTRIM, watermark, WAITAOF)
	// from sending to the last reply.
	RedisBatchSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "redis_batch_seconds", Help: "Round trip of one append batch of the leader to Redis (the batch's XADDs, XTRIM, watermark update and WAITAOF when available), failed batches included.", Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}})
	// RedisAppendedEvents: stream entries the leader added.
	RedisAppendedEvents = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "redis_appended_events_total", Help: "Events this node appended to the Redis stream as leader (entries Redis accepted; events already in the stream are skipped and not counted)."})
	// RedisConnected: the follower loop's last Redis command succeeded.
	RedisConnected = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "redis_connected", Help: "1 while this node's last read of the Redis stream succeeded, 0 after a failed one (until a read succeeds again)."})
	// ClusterResets: discontinuities this node's follower detected.
	ClusterResets = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cluster_resets_total", Help: "Discontinuities this node detected in the Redis stream (data lost in Redis, trimming overtook this node, or an entry that does not decode): each drops the node's retained history and closes its subscribers with 1001 so that they resume."})
)

func init() {
	Registry.MustRegister(RedisBatchSeconds, RedisAppendedEvents, RedisConnected, ClusterResets)
}
