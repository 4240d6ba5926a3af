package main

import (
	"context"

	"github.com/pgrealtime/pgrealtime/cluster"
	"github.com/pgrealtime/pgrealtime/wsapi"
)

// clusterInfo adapts the cluster package to wsapi.ClusterInfo (wsapi does
// not import cluster): the Registry's view, and the role from whatever
// tells whether this node leads (the Elector's Leading).
type clusterInfo struct {
	registry *cluster.Registry
	nodeID   string
	leading  func() bool
}

var _ wsapi.ClusterInfo = clusterInfo{}

func (ci clusterInfo) View(ctx context.Context) (wsapi.ClusterView, error) {
	v, err := ci.registry.View(ctx)
	if err != nil {
		return wsapi.ClusterView{}, err
	}
	out := wsapi.ClusterView{Node: v.Node, Leader: v.Leader, Nodes: make([]wsapi.ClusterNode, 0, len(v.Nodes))}
	for _, n := range v.Nodes {
		out.Nodes = append(out.Nodes, wsapi.ClusterNode{ID: n.ID, Role: n.Role, Connections: n.Connections, Seen: n.Seen})
	}
	return out, nil
}

func (ci clusterInfo) Role() string {
	if ci.leading() {
		return cluster.RoleLeader
	}
	return cluster.RoleFollower
}

func (ci clusterInfo) NodeID() string { return ci.nodeID }
