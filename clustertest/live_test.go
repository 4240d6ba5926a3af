package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/client"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// liveCounts counts the custom events each subscriber received, by name.
type liveCounts struct {
	mu      sync.Mutex
	changed chan struct{}
	got     []map[string]int // per subscriber: event name → count
}

func (lc *liveCounts) watch(i int, sub *client.Subscription) {
	go func() {
		for ev := range sub.Events() {
			lc.mu.Lock()
			if ev.Type == client.TypeCustom {
				lc.got[i][ev.Event]++
			} else {
				lc.got[i]["unexpected "+ev.Type]++
			}
			close(lc.changed)
			lc.changed = make(chan struct{})
			lc.mu.Unlock()
		}
	}()
}

// waitEach waits until every subscriber has received event at least once.
func (lc *liveCounts) waitEach(ctx context.Context, t *testing.T, event string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		lc.mu.Lock()
		var missing []int
		for i, m := range lc.got {
			if m[event] == 0 {
				missing = append(missing, i)
			}
		}
		ch := lc.changed
		lc.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("event %q did not reach subscribers %v (by index; node = index %% %d) within 15 s", event, missing, nodes)
		}
	}
}

// TestClusterLiveEvents: a NOTIFY on the database and a POST /api/broadcast
// sent to node 1 reach subscribers on all three nodes, once each.
func TestClusterLiveEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t)
	const perNode = 2
	lc := &liveCounts{changed: make(chan struct{})}
	for i := 0; i < perNode*nodes; i++ {
		cn := e.dial(ctx, i%nodes)
		sub, err := cn.c.Subscribe(ctx, []string{"chat"}, "")
		if err != nil {
			t.Fatalf("subscribe chat on %s: %v", e.c.IDs[i%nodes], err)
		}
		if got := int(cn.node.Load()); got != i%nodes {
			t.Fatalf("client %d is on node index %d, want %d", i, got, i%nodes)
		}
		lc.got = append(lc.got, map[string]int{})
		lc.watch(i, sub)
	}

	notify := func(event string) {
		payload, _ := json.Marshal(map[string]any{"collection": "chat", "event": event, "data": map[string]any{"via": "notify"}})
		pgtest.Exec(t, e.db, fmt.Sprintf(`SELECT pg_notify('pgrealtime', '%s')`, payload))
	}
	broadcast := func(event string) {
		body, _ := json.Marshal(map[string]any{"collection": "chat", "event": event, "data": map[string]any{"via": "http"}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+e.c.Nodes[0].Addr+"/api/broadcast", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /api/broadcast to %s: %v", e.c.IDs[0], err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /api/broadcast to %s: %d %s, want 202", e.c.IDs[0], resp.StatusCode, b)
		}
	}

	notify("by-notify")
	lc.waitEach(ctx, t, "by-notify")
	broadcast("by-http")
	lc.waitEach(ctx, t, "by-http")
	// Fences: each path delivers in order, so once these are in, a second
	// copy of the first two (sent earlier on the same path) would be too.
	notify("fence-notify")
	broadcast("fence-http")
	lc.waitEach(ctx, t, "fence-notify")
	lc.waitEach(ctx, t, "fence-http")

	lc.mu.Lock()
	defer lc.mu.Unlock()
	for i, m := range lc.got {
		for name, n := range m {
			if n != 1 {
				t.Errorf("subscriber %d on %s received %q %d times, want once", i, e.c.IDs[i%nodes], name, n)
			}
		}
	}
}
