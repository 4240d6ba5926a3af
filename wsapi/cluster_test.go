//go:build unix

package wsapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/cluster"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// registryInfo adapts a real cluster.Registry to ClusterInfo, as cmd does.
type registryInfo struct {
	r       *cluster.Registry
	id      string
	leading *atomic.Bool
}

func (ri registryInfo) View(ctx context.Context) (ClusterView, error) {
	v, err := ri.r.View(ctx)
	if err != nil {
		return ClusterView{}, err
	}
	out := ClusterView{Node: v.Node, Leader: v.Leader}
	for _, n := range v.Nodes {
		out.Nodes = append(out.Nodes, ClusterNode{ID: n.ID, Role: n.Role, Connections: n.Connections, Seen: n.Seen})
	}
	return out, nil
}

func (ri registryInfo) Role() string {
	if ri.leading.Load() {
		return cluster.RoleLeader
	}
	return cluster.RoleFollower
}

func (ri registryInfo) NodeID() string { return ri.id }

// clusterNode runs a Registry for node id on Redis and returns its
// ClusterInfo; connections counts its WebSockets.
func clusterNode(t *testing.T, c rueidis.Client, id string, leading *atomic.Bool, connections func() int) registryInfo {
	t.Helper()
	r, err := cluster.NewRegistry(cluster.RegistryConfig{Client: c, Slot: "wsapi_test", NodeID: id,
		Connections: connections, IsLeader: leading.Load, Logger: zerolog.New(zerolog.NewTestWriter(t)), Heartbeat: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return registryInfo{r: r, id: id, leading: leading}
}

// TestClusterAPI: GET /api/cluster on a server in cluster mode, with a real
// Registry for it and another node's Registry on one real Redis.
func TestClusterAPI(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	var meLeads, otherLeads atomic.Bool
	otherLeads.Store(true)
	var e *env
	var srvMu sync.Mutex
	conns := func() int {
		srvMu.Lock()
		defer srvMu.Unlock()
		if e == nil {
			return 0
		}
		return int(e.srv.Connections())
	}
	me := clusterNode(t, rc, "node-me", &meLeads, conns)
	clusterNode(t, rc, "node-other", &otherLeads, func() int { return 4 })
	srvMu.Lock()
	e = newEnv(t, envOpts{cfg: func(c *Config) { c.Cluster = me }})
	srvMu.Unlock()
	admin := adminToken(t)
	e.dial("")
	e.dial("")

	var v ClusterView
	e.waitFor("both nodes, with node-me's 2 connections", func() bool {
		code, _, raw := e.httpDo("GET", "/api/cluster", admin, "")
		if code != 200 {
			t.Fatalf("GET /api/cluster: %d %s", code, raw)
		}
		v = ClusterView{}
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
		return len(v.Nodes) == 2 && v.Nodes[0].Connections == 2
	})
	if v.Node != "node-me" || v.Leader != "node-other" || v.Nodes[0].ID != "node-me" || v.Nodes[0].Role != "follower" ||
		v.Nodes[1].ID != "node-other" || v.Nodes[1].Role != "leader" || v.Nodes[1].Connections != 4 {
		t.Fatalf("view %+v", v)
	}
	// Exactly PROTOCOL 8's shape: these keys and no others, seen in RFC 3339.
	_, _, raw := e.httpDo("GET", "/api/cluster", admin, "")
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	if len(generic) != 3 || generic["node"] != "node-me" || generic["leader"] != "node-other" {
		t.Fatalf("body %s", raw)
	}
	for _, n := range generic["nodes"].([]any) {
		m := n.(map[string]any)
		if len(m) != 4 || m["id"] == nil || m["role"] == nil || m["connections"] == nil {
			t.Fatalf("node %v in %s", m, raw)
		}
		seen, err := time.Parse(time.RFC3339, m["seen"].(string))
		if err != nil || !strings.HasSuffix(m["seen"].(string), "Z") || time.Since(seen) > time.Minute {
			t.Fatalf("seen %q: %v", m["seen"], err)
		}
	}
	// The same auth as the other admin endpoints.
	for _, tc := range []struct {
		tok    string
		status int
	}{{"", 401}, {token(t, "u", "user", time.Hour), 403}, {"bad", 401}} {
		if code, m, raw := e.httpDo("GET", "/api/cluster", tc.tok, ""); code != tc.status || m["error"] == nil {
			t.Errorf("token %q: %d %s", tc.tok, code, raw)
		}
	}
	if code, _, _ := e.httpDo("POST", "/api/cluster", admin, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/cluster: %d", code)
	}
	// /readyz names the role and the node, and follows the role.
	if code, _, raw := e.httpDo("GET", "/readyz", "", ""); code != 200 || strings.TrimSpace(string(raw)) != `{"ready":true,"role":"follower","node":"node-me"}` {
		t.Fatalf("readyz %d %s", code, raw)
	}
	meLeads.Store(true)
	otherLeads.Store(false)
	if code, _, raw := e.httpDo("GET", "/readyz", "", ""); code != 200 || strings.TrimSpace(string(raw)) != `{"ready":true,"role":"leader","node":"node-me"}` {
		t.Fatalf("readyz %d %s", code, raw)
	}
	e.waitFor("node-me leads in the view", func() bool {
		_, m, _ := e.httpDo("GET", "/api/cluster", admin, "")
		return m["leader"] == "node-me"
	})
	// Redis down: 503 with a reason, never a crash.
	rs.Stop()
	code, m, raw := e.httpDo("GET", "/api/cluster", admin, "")
	if code != 503 || m["error"] != "unavailable" || !strings.Contains(m["message"].(string), "Redis") {
		t.Fatalf("with Redis down: %d %s", code, raw)
	}
}

// TestClusterReadyzNotReady: in cluster mode a node that is not ready
// answers 503 with the reason only.
func TestClusterReadyzNotReady(t *testing.T) {
	var leading atomic.Bool
	info := fixedInfo{id: "n1", leading: &leading}
	e := newEnv(t, envOpts{cfg: func(c *Config) {
		c.Cluster = info
		c.Ready = func() (bool, string) { return false, "redis: connection refused" }
	}})
	code, _, raw := e.httpDo("GET", "/readyz", "", "")
	if code != 503 || strings.TrimSpace(string(raw)) != `{"ready":false,"reason":"redis: connection refused"}` {
		t.Fatalf("readyz %d %s", code, raw)
	}
}

// fixedInfo is a ClusterInfo without Redis, for /readyz only.
type fixedInfo struct {
	id      string
	leading *atomic.Bool
}

func (f fixedInfo) View(context.Context) (ClusterView, error) { return ClusterView{Node: f.id}, nil }
func (f fixedInfo) Role() string {
	if f.leading.Load() {
		return "leader"
	}
	return "follower"
}
func (f fixedInfo) NodeID() string { return f.id }

// TestClusterAPIWithoutClusterMode: without Config.Cluster, /api/cluster is
// 404 with a message, and /readyz is unchanged.
func TestClusterAPIWithoutClusterMode(t *testing.T) {
	e := newEnv(t, envOpts{})
	code, m, raw := e.httpDo("GET", "/api/cluster", adminToken(t), "")
	if code != 404 || m["error"] != "not_found" || !strings.Contains(m["message"].(string), "--redis-url") {
		t.Fatalf("GET /api/cluster: %d %s", code, raw)
	}
	if code, _, raw := e.httpDo("GET", "/readyz", "", ""); code != 200 || strings.TrimSpace(string(raw)) != `{"ready":true}` {
		t.Fatalf("readyz %d %s", code, raw)
	}
	// The handler is reachable only through the router: a GET from a
	// remote address is still 404, not an auth error.
	req := httptest.NewRequest("GET", "/api/cluster", nil)
	req.RemoteAddr = "203.0.113.7:5555"
	w := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(w, req)
	if w.Code != 404 {
		t.Fatalf("remote: %d %s", w.Code, w.Body)
	}
}
