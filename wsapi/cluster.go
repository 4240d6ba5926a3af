package wsapi

import (
	"context"
	"net/http"
	"time"
)

// ClusterInfo is cluster mode as the HTTP endpoints see it (PROTOCOL
// section 8). cmd adapts the cluster package's Registry and Elector to it;
// wsapi does not import them.
type ClusterInfo interface {
	// View reads the cluster's nodes (from Redis): an error makes
	// GET /api/cluster answer 503.
	View(ctx context.Context) (ClusterView, error)
	// Role is this node's role now: "leader" or "follower".
	Role() string
	// NodeID is this node's --node-id.
	NodeID() string
}

// ClusterView is the body of GET /api/cluster.
type ClusterView struct {
	// Node is this node's id.
	Node string `json:"node"`
	// Leader is the leader's id, "" when none is known.
	Leader string `json:"leader"`
	// Nodes are the nodes seen in the last 5 s.
	Nodes []ClusterNode `json:"nodes"`
}

// ClusterNode is one node of a ClusterView.
type ClusterNode struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Connections int       `json:"connections"`
	Seen        time.Time `json:"seen"` // RFC 3339, UTC
}

// clusterViewTimeout bounds the Redis reads of one GET /api/cluster.
const clusterViewTimeout = 5 * time.Second

// serveCluster answers GET /api/cluster: the admin role, as the other /api
// endpoints; 404 on a node without --redis-url.
func (s *Server) serveCluster(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Cluster == nil {
		writeError(w, http.StatusNotFound, "not_found", "cluster mode is off: this node runs without --redis-url (PROTOCOL section 8)")
		return
	}
	if !s.adminOnly(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), clusterViewTimeout)
	defer cancel()
	v, err := s.cfg.Cluster.View(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("cluster view")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "cannot read the cluster's nodes from Redis: "+err.Error())
		return
	}
	if v.Nodes == nil {
		v.Nodes = []ClusterNode{}
	}
	for i := range v.Nodes {
		v.Nodes[i].Seen = v.Nodes[i].Seen.UTC()
	}
	writeJSON(w, http.StatusOK, v)
}

// readyBody is /readyz's answer when ready: with the role and node in
// cluster mode.
type readyBody struct {
	Ready bool   `json:"ready"`
	Role  string `json:"role,omitempty"`
	Node  string `json:"node,omitempty"`
}

func (s *Server) readyBody() readyBody {
	b := readyBody{Ready: true}
	if s.cfg.Cluster != nil {
		b.Role, b.Node = s.cfg.Cluster.Role(), s.cfg.Cluster.NodeID()
	}
	return b
}
