//go:build unix

package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// startRedisCluster starts a Redis Cluster of three primaries, the hash
// slots split among them, and returns a cluster client and the first
// node's URL.
func startRedisCluster(ctx context.Context, t *testing.T) (rueidis.Client, string) {
	t.Helper()
	var servers []*redistest.Server
	var singles []rueidis.Client
	for i := 0; i < 3; i++ {
		s := redistest.Start(t, redistest.Options{Args: []string{"--cluster-enabled", "yes", "--cluster-node-timeout", "5000"}})
		if s == nil {
			return nil, ""
		}
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true, ForceSingleClient: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		servers, singles = append(servers, s), append(singles, c)
	}
	ranges := [][2]int64{{0, 5460}, {5461, 10922}, {10923, 16383}}
	for i, c := range singles {
		if err := c.Do(ctx, c.B().ClusterAddslotsrange().StartSlotEndSlot().StartSlotEndSlot(ranges[i][0], ranges[i][1]).Build()).Error(); err != nil {
			t.Fatalf("addslotsrange: %v", err)
		}
		if i > 0 {
			if err := singles[0].Do(ctx, singles[0].B().ClusterMeet().Ip("127.0.0.1").Port(int64(servers[i].Port)).Build()).Error(); err != nil {
				t.Fatalf("cluster meet: %v", err)
			}
		}
	}
	for i, c := range singles {
		for {
			info, err := c.Do(ctx, c.B().ClusterInfo().Build()).ToString()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3") {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("node %d never saw a healthy cluster of 3: %q, %v", i, info, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.Addr())
	}
	cc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Close)
	if cc.Mode() != rueidis.ClientModeCluster {
		t.Fatalf("client mode %v, want cluster", cc.Mode())
	}
	return cc, servers[0].URL()
}

// TestClusterResetOnRedisCluster: on a Redis Cluster of three primaries
// (SCAN does not follow hash slots), the binary, given one node's URL,
// finds and deletes every key of its slot and no other.
func TestClusterResetOnRedisCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, url := startRedisCluster(ctx, t)
	if c == nil {
		return
	}
	old := time.Now().Add(-2 * resetFresh)
	var others []string
	// Clusters on every primary, so that whichever node holds "app", the
	// others hold keys too.
	for i := 0; i < 12; i++ {
		others = append(others, seedCluster(ctx, t, c, fmt.Sprintf("app%d", i), old)...)
	}
	mine := seedCluster(ctx, t, c, "app", old)

	p := startProc(t, nil, "cluster", "reset", "--redis-url="+url, "--slot=app", "--yes")
	if code := p.wait(60 * time.Second); code != 0 {
		t.Fatalf("exit %d; stdout %q stderr %q", code, p.stdout.String(), p.stderr.String())
	}
	if !strings.Contains(p.stdout.String(), `deleted 5 keys of cluster "app"`) {
		t.Errorf("stdout %q", p.stdout.String())
	}
	if got := existing(ctx, t, c, mine); len(got) != 0 {
		t.Errorf("keys of the slot left: %v", got)
	}
	if got := existing(ctx, t, c, others); !slices.Equal(got, others) {
		t.Errorf("other slots' keys deleted: kept %d of %d", len(got), len(others))
	}
}
