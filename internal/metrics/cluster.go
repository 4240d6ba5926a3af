package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster mode (PROTOCOL section 8, docs/cluster.md section 11).
var (
	// ClusterLeader: 1 while this node leads (reads the WAL).
	ClusterLeader = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_leader", Help: "1 while this node is the cluster's leader (the one node reading the WAL), else 0; always 0 without --redis-url."})
	// ClusterNodes: fresh entries of the nodes hash, as this node last read it.
	ClusterNodes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_nodes", Help: "Nodes of the cluster seen in Redis within the last 5 s (this one included), read every second; 0 without --redis-url."})
	// ClusterLeaderChanges: times this node became the leader.
	ClusterLeaderChanges = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "cluster_leader_changes_total", Help: "Times this node became the leader; summed over the nodes, the cluster's leader changes."})
	// ClusterStreamLag: how far this node's fan-out is behind the stream.
	ClusterStreamLag = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_stream_lag_bytes", Help: "WAL bytes between the newest entry of the Redis stream and the last one this node applied (fanned out to its subscribers), read about every second; 0 when it has applied everything."})
)

var leaderState struct {
	mu      sync.Mutex
	leading bool
}

// SetClusterLeader records whether this node leads now: it sets
// pgrealtime_cluster_leader and counts each change from not leading to
// leading in pgrealtime_cluster_leader_changes_total. Calling it again with
// the same value changes nothing.
func SetClusterLeader(leading bool) {
	leaderState.mu.Lock()
	defer leaderState.mu.Unlock()
	if leading && !leaderState.leading {
		ClusterLeaderChanges.Inc()
	}
	leaderState.leading = leading
	if leading {
		ClusterLeader.Set(1)
	} else {
		ClusterLeader.Set(0)
	}
}

func init() {
	Registry.MustRegister(ClusterLeader, ClusterNodes, ClusterLeaderChanges, ClusterStreamLag)
}
