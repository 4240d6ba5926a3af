package proctest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyTimeout bounds how long a node may take to answer /readyz 200 after
// it was launched (loading the history from Redis included).
const readyTimeout = 60 * time.Second

// ClusterConfig describes the nodes of one cluster (PROTOCOL section 8):
// every node gets the same database, Redis and slot, its own --node-id and
// its own loopback port.
type ClusterConfig struct {
	Nodes       int    // number of nodes (at least 1)
	DatabaseURL string // --database-url
	RedisURL    string // --redis-url
	Slot        string // --slot, the cluster's name
	// Args are flags every node gets (--jwt-secret, --config, …).
	Args []string
	// AdminToken is sent to GET /api/cluster.
	AdminToken string
}

// Cluster is N pgrealtime processes in cluster mode.
type Cluster struct {
	t     testing.TB
	cfg   ClusterConfig
	Nodes []*Server
	IDs   []string // --node-id of each node, "node1", "node2", …
}

// Readiness is the JSON of /readyz in cluster mode.
type Readiness struct {
	Status int    `json:"-"`
	Ready  bool   `json:"ready"`
	Role   string `json:"role"`
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// View is the JSON of GET /api/cluster.
type View struct {
	Node   string     `json:"node"`
	Leader string     `json:"leader"`
	Nodes  []NodeInfo `json:"nodes"`
}

// NodeInfo is one node of a View.
type NodeInfo struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Connections int       `json:"connections"`
	Seen        time.Time `json:"seen"`
}

// StartCluster launches every node at once and waits until each answers
// /readyz 200. A binary without cluster mode fails the test saying so.
func StartCluster(t testing.TB, cfg ClusterConfig) *Cluster {
	t.Helper()
	if cfg.Nodes < 1 {
		t.Fatalf("proctest: StartCluster: Nodes = %d", cfg.Nodes)
	}
	c := &Cluster{t: t, cfg: cfg}
	for i := 1; i <= cfg.Nodes; i++ {
		id := fmt.Sprintf("node%d", i)
		args := append([]string{"--database-url", cfg.DatabaseURL, "--redis-url", cfg.RedisURL,
			"--node-id", id, "--slot", cfg.Slot}, cfg.Args...)
		c.Nodes = append(c.Nodes, New(t, args))
		c.IDs = append(c.IDs, id)
	}
	c.StartAll()
	return c
}

// StartAll launches every node that is not running, all at once, and waits
// until each answers /readyz 200.
func (c *Cluster) StartAll() {
	c.t.Helper()
	var launched []*Server
	for _, s := range c.Nodes {
		if !s.Running() {
			s.Launch()
			launched = append(launched, s)
		}
	}
	for _, s := range launched {
		if err := s.WaitReady(readyTimeout); err != nil {
			c.t.Fatal(explainStart(err))
		}
	}
}

// StopAll sends SIGTERM to every running node at once and waits until all
// have exited.
func (c *Cluster) StopAll() { c.signalAll((*Server).Stop) }

// KillAll sends SIGKILL to every running node at once and waits until all
// are gone.
func (c *Cluster) KillAll() { c.signalAll((*Server).Kill) }

func (c *Cluster) signalAll(f func(*Server)) {
	var wg sync.WaitGroup
	for _, s := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); f(s) }()
	}
	wg.Wait()
}

// Restart launches node i again and waits until it is ready.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Nodes[i].Launch()
	if err := c.Nodes[i].WaitReady(readyTimeout); err != nil {
		c.t.Fatal(explainStart(err))
	}
}

// explainStart says plainly when the binary has no cluster mode yet.
func explainStart(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "not wired yet") || strings.Contains(msg, "--redis-url: unknown flag") || strings.Contains(msg, "--node-id: unknown flag") {
		return fmt.Errorf("this pgrealtime binary has no cluster mode (PROTOCOL section 8: --redis-url, --node-id) yet, so the cluster tests cannot run:\n%w", err)
	}
	return err
}

// Ready fetches /readyz of node i (any status; Status is the HTTP status).
func (c *Cluster) Ready(ctx context.Context, i int) (Readiness, error) {
	var r Readiness
	status, body, err := get(ctx, "http://"+c.Nodes[i].Addr+"/readyz", "")
	if err != nil {
		return r, err
	}
	r.Status = status
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("/readyz of %s answered %d %q: not the JSON of PROTOCOL 8: %v", c.IDs[i], status, body, err)
	}
	if status == http.StatusOK && (!r.Ready || r.Node != c.IDs[i] || (r.Role != "leader" && r.Role != "follower")) {
		return r, fmt.Errorf("/readyz of %s answered 200 %s: want ready true, node %q, role leader or follower", c.IDs[i], body, c.IDs[i])
	}
	return r, nil
}

// View fetches GET /api/cluster from node i with the admin token.
func (c *Cluster) View(ctx context.Context, i int) (View, error) {
	var v View
	status, body, err := get(ctx, "http://"+c.Nodes[i].Addr+"/api/cluster", c.cfg.AdminToken)
	if err != nil {
		return v, err
	}
	if status != http.StatusOK {
		return v, fmt.Errorf("GET /api/cluster on %s: %d %s", c.IDs[i], status, body)
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return v, fmt.Errorf("GET /api/cluster on %s: %q: %v", c.IDs[i], body, err)
	}
	return v, nil
}

// Leader waits until exactly one running node says, on /readyz, that it
// leads (and no other running node says so too), and returns its index.
// It fails the test after timeout.
func (c *Cluster) Leader(ctx context.Context, timeout time.Duration) int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no answer yet"
	for {
		leaders, roles := []int{}, []string{}
		for i, s := range c.Nodes {
			if !s.Running() {
				roles = append(roles, c.IDs[i]+": not running")
				continue
			}
			r, err := c.Ready(ctx, i)
			switch {
			case err != nil:
				roles = append(roles, c.IDs[i]+": "+err.Error())
			case r.Status != http.StatusOK:
				roles = append(roles, fmt.Sprintf("%s: %d %s", c.IDs[i], r.Status, r.Reason))
			default:
				roles = append(roles, c.IDs[i]+": "+r.Role)
				if r.Role == "leader" {
					leaders = append(leaders, i)
				}
			}
		}
		if len(leaders) > 1 {
			c.t.Fatalf("two nodes say they lead at once: %s", strings.Join(roles, "; "))
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		last = strings.Join(roles, "; ")
		select {
		case <-ctx.Done():
			c.t.Fatalf("no leader within %s: %s", timeout, last)
			return -1
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Healthy reports whether node i answers /readyz 200 right now.
func (c *Cluster) Healthy(ctx context.Context, i int) bool {
	if !c.Nodes[i].Running() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	status, _, err := get(ctx, "http://"+c.Nodes[i].Addr+"/readyz", "")
	return err == nil && status == http.StatusOK
}

var httpClient = &http.Client{Transport: &http.Transport{Proxy: nil}}

func get(ctx context.Context, url, token string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		return resp.StatusCode, body, err
	}
	return resp.StatusCode, body, nil
}
