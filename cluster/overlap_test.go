package cluster

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// Three nodes, random graceful stops, restarts and step-downs: never two
// terms at once. The counter changes only inside lead, that is while the
// lock is held; and each term, as it ends (a real leader drains its
// appender then), finds the lock still held by its own session.
func TestNeverTwoLeaders(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	var active, overlaps atomic.Int32
	type term struct {
		node     int
		stepDown chan struct{} // closed: lead returns
		ending   chan struct{} // closed by lead when its term is ending
		drained  chan struct{} // closed by the test: lead may return
	}
	terms := make(chan term)
	over := make(chan struct{})
	run := func(i int) (context.CancelFunc, chan struct{}) {
		e := newElector(t, url, "s", string(rune('a'+i)))
		e.cfg.RetryDelay = 10 * time.Millisecond
		e.cfg.CheckTimeout = 10 * time.Second // a slow check on a busy machine is not what this test is about
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = e.Run(ctx, func(ctx context.Context) error {
				if active.Add(1) != 1 {
					overlaps.Add(1)
				}
				defer active.Add(-1)
				tm := term{i, make(chan struct{}), make(chan struct{}), make(chan struct{})}
				select {
				case terms <- tm:
				case <-over:
					return nil
				}
				select {
				case <-tm.stepDown:
				case <-ctx.Done():
				}
				close(tm.ending)
				select {
				case <-tm.drained:
				case <-over:
				}
				return nil
			})
		}()
		return cancel, done
	}
	var cancels [3]context.CancelFunc
	var dones [3]chan struct{}
	for i := range 3 {
		cancels[i], dones[i] = run(i)
	}
	defer func() {
		close(over)
		for i := range 3 {
			cancels[i]()
			<-dones[i]
		}
	}()
	holder := func() string {
		var app string
		err := admin.QueryRow(context.Background(), `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND l.classid::int8 = ($1::int8 >> 32) & 4294967295 AND l.objid::int8 = $1::int8 & 4294967295`, LockKey("s")).Scan(&app)
		if err != nil {
			return "none: " + err.Error()
		}
		return app
	}
	for round := range 30 {
		var tm term
		select {
		case tm = <-terms:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: no leader", round)
		}
		restart := rng.IntN(2) == 0
		if restart {
			cancels[tm.node]()
		} else {
			close(tm.stepDown)
		}
		select {
		case <-tm.ending:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: term of %c does not end", round, 'a'+tm.node)
		}
		if h, want := holder(), AppName(string(rune('a'+tm.node))); h != want {
			t.Fatalf("round %d: the lock is held by %q while the term of %s is ending", round, h, want)
		}
		close(tm.drained)
		if restart {
			<-dones[tm.node]
			cancels[tm.node], dones[tm.node] = run(tm.node)
		}
	}
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d terms began while another was running", n)
	}
}
