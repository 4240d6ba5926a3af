package clustertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// writer commits one row per transaction, seq = 1, 2, 3, …, on a fixed
// schedule (a late insert does not shift the ones after it), on its own
// connection, until stop.
type writer struct {
	t      *testing.T
	pid    uint32       // its backend, spared when the test ends the nodes' sessions
	seq    atomic.Int64 // last seq committed
	begun  atomic.Int64 // last seq whose insert was sent
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

func startWriter(ctx context.Context, t *testing.T, db string, rate int) *writer {
	t.Helper()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &writer{t: t, pid: conn.PgConn().PID(), cancel: cancel, done: make(chan struct{})}
	t.Cleanup(func() { w.cancel(); <-w.done })
	go func() {
		defer close(w.done)
		defer conn.Close(context.Background())
		interval := time.Second / time.Duration(rate)
		start := time.Now()
		for i := int64(1); ; i++ {
			due := start.Add(time.Duration(i-1) * interval)
			select {
			case <-wctx.Done():
				return
			case <-time.After(time.Until(due)):
			}
			w.begun.Store(i)
			// Not wctx: stop must not cancel an insert that may commit
			// anyway (the row would be received but not counted).
			ictx, icancel := context.WithTimeout(context.WithoutCancel(wctx), 30*time.Second)
			_, err := conn.Exec(ictx, `INSERT INTO posts (seq) VALUES ($1)`, i)
			icancel()
			if err != nil {
				if wctx.Err() == nil {
					w.mu.Lock()
					w.err = fmt.Errorf("writer: insert seq %d: %w", i, err)
					w.mu.Unlock()
				}
				return
			}
			w.seq.Store(i)
		}
	}()
	return w
}

// next is the seq of the next row to be sent: every row with it or above
// is committed after this call.
func (w *writer) next() int64 { return w.begun.Load() + 1 }

// stop ends the writer and returns the last seq committed.
func (w *writer) stop() int64 {
	w.t.Helper()
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		w.t.Fatal(w.err)
	}
	return w.seq.Load()
}
