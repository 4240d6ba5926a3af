package metrics

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func value(t *testing.T, m interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// TestSetClusterLeader: the gauge follows the state; the counter counts
// becoming leader, not every call.
func TestSetClusterLeader(t *testing.T) {
	before := value(t, ClusterLeaderChanges)
	for i, step := range []struct {
		leading bool
		gauge   float64
		changes float64
	}{
		{false, 0, 0},
		{true, 1, 1},
		{true, 1, 1},
		{false, 0, 1},
		{false, 0, 1},
		{true, 1, 2},
	} {
		SetClusterLeader(step.leading)
		if g, c := value(t, ClusterLeader), value(t, ClusterLeaderChanges)-before; g != step.gauge || c != step.changes {
			t.Fatalf("step %d (leading %v): gauge %v, changes %v; want %v, %v", i, step.leading, g, c, step.gauge, step.changes)
		}
	}
	SetClusterLeader(false)
}

// TestClusterMetricsRegistered: the cluster metrics are served by /metrics.
func TestClusterMetricsRegistered(t *testing.T) {
	mfs, err := Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, n := range []string{"pgrealtime_cluster_leader", "pgrealtime_cluster_nodes", "pgrealtime_cluster_leader_changes_total", "pgrealtime_cluster_stream_lag_bytes"} {
		if !have[n] {
			t.Errorf("%s is not registered", n)
		}
	}
}
