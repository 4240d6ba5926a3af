package wsapi

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// depthLog records the send queue depths seen after each push.
type depthLog struct {
	mu sync.Mutex
	d  []int
}

func (l *depthLog) add(n int) {
	l.mu.Lock()
	l.d = append(l.d, n)
	l.mu.Unlock()
}

// stats returns the maximum and the 99th percentile of the depths, and
// how many there were.
func (l *depthLog) stats() (maxDepth, p99, n int) {
	l.mu.Lock()
	d := slices.Clone(l.d)
	l.mu.Unlock()
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return d[len(d)-1], d[len(d)*99/100], len(d)
}

const burstSchema = `CREATE TABLE posts (id int PRIMARY KEY, body text)`

// readEvents reads n record events on c as fast as it can, checking that
// their record ids are first, first+1, ...; it reports on done.
func readEvents(c *client, first, n int, done chan<- error) {
	for i := 0; i < n; i++ {
		_, b, err := c.ws.Read(c.ctx)
		if err != nil {
			done <- fmt.Errorf("after %d of %d events: %w (close status %d)", i, n, err, websocket.CloseStatus(err))
			return
		}
		want := fmt.Sprintf(`"record_id":"%d"`, first+i)
		if !bytes.HasPrefix(b, []byte(`{"type":"record_event"`)) || !bytes.Contains(b, []byte(want)) {
			done <- fmt.Errorf("event %d: got %.120s, want a record_event with %s", i, b, want)
			return
		}
	}
	done <- nil
}

// A client that keeps reading is never closed with 4008, however the
// stream comes: 3 000 single-row transactions of 4 KB, committed one after
// another, reach a fast reader on a send queue of 16, twenty times over.
// The WAL reaches pgrealtime in bursts (Postgres sends what its WAL writer
// flushed: with synchronous_commit off, every 200 ms), each transaction is
// one message, and the writer cannot write them as fast as they are
// published: the queue runs far past 16 while the client keeps up.
//
// It logs the queue depths the reader reached (max and p99):
//
//	go test -race -run TestFastReaderNeverSlowConsumer -v ./wsapi/
func TestFastReaderNeverSlowConsumer(t *testing.T) {
	var depths depthLog
	p := newPGEnv(t, burstSchema, envOpts{history: 1000, timeout: 10 * time.Minute, cfg: func(c *Config) {
		c.SendQueue = 16
	}})
	p.srv.queueDepth = depths.add
	tok := adminToken(t)
	body := strings.Repeat("x", 4096)
	const rows = 3000
	reps := 20
	if testing.Short() {
		reps = 2
	}
	id := 0
	for rep := 0; rep < reps; rep++ {
		c := p.dial(tok)
		c.sub("posts.*")
		done := make(chan error, 1)
		go readEvents(c, id+1, rows, done)
		for i := 0; i < rows; i++ {
			id++
			if _, err := p.db.Exec(p.ctx, `INSERT INTO posts VALUES ($1, $2)`, id, body); err != nil {
				t.Fatalf("insert: %v", err)
			}
		}
		if err := <-done; err != nil {
			mx, p99, n := depths.stats()
			t.Fatalf("repetition %d: fast reader: %v (queue depth max %d, p99 %d over %d pushes)", rep, err, mx, p99, n)
		}
		c.ws.CloseNow()
	}
	mx, p99, n := depths.stats()
	t.Logf("send queue depth of a fast reader (--send-queue 16): max %d, p99 %d over %d pushes", mx, p99, n)
}

// A client that stops reading is still closed with 4008, within a bounded
// time (BehindTimeout to twice that once its socket is full; the write
// timeout is out of reach here), while a fast reader on the same stream
// receives every event, in order.
func TestStalledClientClosedFastReaderKeepsAll(t *testing.T) {
	p := newPGEnv(t, burstSchema, envOpts{history: 1000, timeout: 5 * time.Minute, cfg: func(c *Config) {
		c.SendQueue = 16
		c.WriteTimeout = 10 * time.Minute
	}})
	tok := adminToken(t)

	// The stalled client has a tiny receive buffer, so that the server's
	// socket fills quickly; it never reads.
	smallBuf := smallReceiveBuffer()
	ws, _, err := websocket.Dial(p.ctx, p.wsURL, &websocket.DialOptions{HTTPClient: smallBuf, HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	stalled := p.wrap(ws)
	stalled.sub("posts.*")

	good := p.dial(tok)
	good.sub("posts.*")
	var read atomic.Int64
	goodErr := make(chan error, 1)
	go func() {
		for i := 1; ; i++ {
			_, b, err := good.ws.Read(good.ctx)
			if err != nil {
				goodErr <- fmt.Errorf("after %d events: %w", i-1, err)
				return
			}
			if want := fmt.Sprintf(`"record_id":"%d"`, i); !bytes.Contains(b, []byte(want)) {
				goodErr <- fmt.Errorf("event %d: got %.120s, want %s", i, b, want)
				return
			}
			read.Store(int64(i))
		}
	}()

	slowBefore := counterValue(t, metrics.SlowConsumerCloses)
	body := strings.Repeat("x", 4096)
	start := time.Now()
	rows, closedAt := 0, 0
	var closedAfter time.Duration
	for closedAt == 0 || rows < closedAt+500 {
		if closedAt == 0 && rows == 100000 {
			t.Fatalf("the stalled client is still open after %d rows in %v", rows, time.Since(start))
		}
		rows++
		if _, err := p.db.Exec(p.ctx, `INSERT INTO posts VALUES ($1, $2)`, rows, body); err != nil {
			t.Fatalf("insert: %v", err)
		}
		if closedAt == 0 && counterValue(t, metrics.SlowConsumerCloses) > slowBefore {
			closedAt, closedAfter = rows, time.Since(start)
		}
	}
	t.Logf("stalled client closed with 4008 %v after the first insert, at row %d", closedAfter, closedAt)
	if closedAfter > 30*time.Second {
		t.Errorf("the stalled client was closed only %v after the first insert", closedAfter)
	}
	// The stalled client, reading at last, finds 4008 after what its
	// socket held.
	for {
		if _, _, err := stalled.ws.Read(p.ctx); err != nil {
			if websocket.CloseStatus(err) != StatusSlowConsumer {
				t.Fatalf("stalled client: %v, want close 4008", err)
			}
			break
		}
	}
	// The fast reader gets every row, in order.
	p.waitFor(fmt.Sprintf("the fast reader to read %d events", rows), func() bool {
		select {
		case err := <-goodErr:
			t.Fatalf("fast reader: %v", err)
		default:
		}
		return read.Load() == int64(rows)
	})
}
