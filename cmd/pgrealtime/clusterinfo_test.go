//go:build unix

package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/cluster"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// TestClusterInfoAdapter: the adapter cmd hands to wsapi carries the
// Registry's view and the role over unchanged (a real Registry on a real
// Redis).
func TestClusterInfoAdapter(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var leading atomic.Bool
	leading.Store(true)
	reg, err := cluster.NewRegistry(cluster.RegistryConfig{Client: c, Slot: "cmd_test", NodeID: "n1",
		Connections: func() int { return 5 }, IsLeader: leading.Load, Logger: zerolog.New(zerolog.NewTestWriter(t)), Heartbeat: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = reg.Run(runCtx) }()
	defer func() { stop(); <-done }()
	ci := clusterInfo{registry: reg, nodeID: "n1", leading: leading.Load}
	for {
		v, err := ci.View(ctx)
		if err == nil && v.Leader == "n1" && len(v.Nodes) == 1 {
			n := v.Nodes[0]
			if v.Node != "n1" || n.ID != "n1" || n.Role != "leader" || n.Connections != 5 || time.Since(n.Seen) > time.Minute {
				t.Fatalf("view %+v", v)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no view with n1 leading: %+v, %v", v, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if ci.Role() != "leader" || ci.NodeID() != "n1" {
		t.Fatalf("role %q node %q", ci.Role(), ci.NodeID())
	}
	leading.Store(false)
	if ci.Role() != "follower" {
		t.Fatalf("role %q after stepping down", ci.Role())
	}
}
