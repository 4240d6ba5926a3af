package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// node is one Elector.Run in the test process; each term it wins sends its
// lead context on terms and lasts until that context ends.
type node struct {
	id     string
	e      *Elector
	terms  chan context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newElector(t *testing.T, url, slot, id string) *Elector {
	t.Helper()
	e, err := New(Config{DatabaseURL: url, Slot: slot, NodeID: id, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func startNode(t *testing.T, e *Elector) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{id: e.cfg.NodeID, e: e, terms: make(chan context.Context, 16), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		_ = e.Run(ctx, func(ctx context.Context) error {
			n.terms <- ctx
			<-ctx.Done()
			return nil
		})
	}()
	t.Cleanup(n.stop)
	return n
}

// stop ends Run and waits for it.
func (n *node) stop() {
	n.cancel()
	<-n.done
}

// waitLead returns the context of n's next term, failing after d.
func (n *node) waitLead(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	select {
	case ctx := <-n.terms:
		return ctx
	case <-time.After(d):
		t.Fatalf("%s did not lead within %v", n.id, d)
		return nil
	}
}

// notLeading fails if n has begun a term.
func (n *node) notLeading(t *testing.T) {
	t.Helper()
	select {
	case <-n.terms:
		t.Fatalf("%s leads too", n.id)
	default:
	}
	if n.e.Leading() {
		t.Fatalf("%s says it leads", n.id)
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// waitUntil polls cond (a query of the server's state) until it holds.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitQueued waits until node id's lock session is blocked on the lock.
func waitQueued(t *testing.T, admin *pgx.Conn, id string) {
	t.Helper()
	waitUntil(t, 30*time.Second, id+" waits for the lock", func() bool {
		var n int
		err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'`, AppName(id)).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
}

// lockPID is the backend pid of node id's lock session.
func lockPID(t *testing.T, admin *pgx.Conn, id string) int32 {
	t.Helper()
	var pid int32
	if err := admin.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, AppName(id)).Scan(&pid); err != nil {
		t.Fatalf("lock session of %s: %v", id, err)
	}
	return pid
}
