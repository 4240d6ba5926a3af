package redisbroker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/broker/brokertest"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// startHubNode is a Broker made by New (a broker.Hub behind it) on its own
// slot, running until the test ends and ready.
func startHubNode(t *testing.T, b *Broker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = b.Close()
	})
	(&node{b: b}).waitReady(t)
}

// TestContract runs the broker contract on the Redis broker: each case on
// its own slot of one redis-server; the suite holds the leader role (it
// calls Begin and Append itself).
func TestContract(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	client := newClient(t, srv)
	var n atomic.Int64
	brokertest.Run(t, func(t *testing.T, history int) broker.Broker {
		b, err := New(Config{Client: client, Slot: fmt.Sprintf("contract-%d", n.Add(1)), HistorySize: history,
			Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
		if err != nil {
			t.Fatal(err)
		}
		startHubNode(t, b)
		return b
	})
}
