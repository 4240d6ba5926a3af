package wsapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// countConn counts the writes to a server-side socket (each one write(2),
// or one writev(2) for Buffers).
type countConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A transaction of 1 000 events reaches the subscriber in far fewer than
// 1 000 socket writes, every event intact and in order, while pings from
// the client are answered during the drain.
func TestWritesCoalesced(t *testing.T) {
	var writes atomic.Int64
	e := newEnv(t, envOpts{conn: func(c net.Conn) net.Conn { return countConn{c, &writes} }})
	c := e.dial(adminToken(t))
	c.sub("posts")

	const n = 1000
	evs := make([]*broker.Event, n)
	for i := range evs {
		evs[i] = rec("posts", "create", fmt.Sprint(i), "title", strings.Repeat("t", i%200))
	}
	got := make(chan msg, n+10)
	readErr := make(chan error, 1)
	go func() { // reads on, so that pongs are received after the events
		for {
			m, err := c.readErr(30 * time.Second)
			if err != nil {
				readErr <- err
				return
			}
			got <- m
		}
	}()
	before := writes.Load()
	pingErr := make(chan error, 1)
	e.publish(evs...)
	go func() { // control frames during the drain
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		defer cancel()
		for range 5 {
			if err := c.ws.Ping(ctx); err != nil {
				pingErr <- err
				return
			}
		}
		pingErr <- nil
	}()
	for i := range n {
		var m msg
		select {
		case m = <-got:
		case err := <-readErr:
			t.Fatalf("after %d events: %v", i, err)
		}
		if m.str("type") != "record_event" || m.str("record_id") != fmt.Sprint(i) || m.str("position") != evs[i].Position.String() {
			t.Fatalf("event %d: got %v, want record %d at %s", i, m, i, evs[i].Position)
		}
		rec, _ := m["record"].(map[string]any)
		if title, _ := rec["title"].(string); title != strings.Repeat("t", i%200) {
			t.Fatalf("event %d: title of %d bytes, want %d", i, len(title), i%200)
		}
	}
	if err := <-pingErr; err != nil {
		t.Fatalf("ping during the drain: %v", err)
	}
	w := writes.Load() - before
	t.Logf("%d events in %d socket writes", n, w)
	if w > n/10 {
		t.Fatalf("%d events took %d socket writes, want at most %d", n, w, n/10)
	}
}

// A close during a drain is written after the frames buffered before it:
// the client reads a prefix of the events, in order, then close 1001.
func TestCloseAfterBufferedFrames(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(adminToken(t))
	c.sub("posts")
	const n = 2000
	evs := make([]*broker.Event, n)
	for i := range evs {
		evs[i] = rec("posts", "create", fmt.Sprint(i), "title", strings.Repeat("t", 100))
	}
	e.publish(evs...)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
	}()
	defer wg.Wait()
	for i := 0; ; i++ {
		m, err := c.readErr(20 * time.Second)
		if err != nil {
			if code := websocket.CloseStatus(err); code != StatusGoingAway {
				t.Fatalf("after %d events: %v, want close 1001", i, err)
			}
			t.Logf("close 1001 after %d of %d events", i, n)
			return
		}
		if i >= n || m.str("position") != evs[i].Position.String() {
			t.Fatalf("frame %d: %v, want event at %s", i, m, evs[min(i, n-1)].Position)
		}
	}
}

// A client that never reads, with a small queue and a short write timeout,
// is closed with 4008 (by the flush deadline or the queue overflow,
// whichever comes first); the publisher is never held up and the
// connection goes away.
func TestStalledClientShortWriteTimeout(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) {
		c.SendQueue = 8
		c.WriteTimeout = 300 * time.Millisecond
	}})
	stalled := e.dial(adminToken(t))
	stalled.sub("big")
	slowBefore := counterValue(t, metrics.SlowConsumerCloses)
	payload := strings.Repeat("x", 64<<10)
	var slowest time.Duration
	for i := 0; i < 2000 && counterValue(t, metrics.SlowConsumerCloses) == slowBefore; i++ {
		start := time.Now()
		e.publish(rec("big", "create", fmt.Sprint(i), "blob", payload), rec("big", "update", fmt.Sprint(i), "blob", payload))
		slowest = max(slowest, time.Since(start))
		time.Sleep(time.Millisecond)
	}
	e.waitFor("the 4008 close", func() bool { return counterValue(t, metrics.SlowConsumerCloses) > slowBefore })
	if slowest > 2*time.Second {
		t.Errorf("a publish took %v: the stalled client held up the publisher", slowest)
	}
	e.waitFor("the stalled connection to go", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.conns) == 0
	})
	if d := counterValue(t, metrics.SlowConsumerCloses) - slowBefore; d != 1 {
		t.Errorf("%v slow-consumer closes for one connection, want 1", d)
	}
	// The client, reading now, ends without hanging (whatever reached its
	// socket before the server dropped it).
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	for {
		if _, _, err := stalled.ws.Read(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("the stalled connection was not closed")
			}
			break
		}
	}
}

// A client that stops reading in the middle of one big transaction (one
// queue item: no overflow) is closed with 4008 by the flush deadline; when
// it reads again it gets a prefix of the events, in order, then the 4008
// close frame (not a cut stream).
func TestStalledFlushThen4008(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.WriteTimeout = time.Second }})
	smallBuf := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		},
	}).DialContext}}
	ws, _, err := websocket.Dial(e.ctx, e.wsURL, &websocket.DialOptions{HTTPClient: smallBuf, HTTPHeader: http.Header{"Authorization": {"Bearer " + adminToken(t)}}})
	if err != nil {
		t.Fatal(err)
	}
	c := e.wrap(ws)
	c.sub("big")
	slowBefore := counterValue(t, metrics.SlowConsumerCloses)
	payload := strings.Repeat("x", 16<<10)
	evs := make([]*broker.Event, 400) // 6.4 MiB in one transaction
	for i := range evs {
		evs[i] = rec("big", "create", fmt.Sprint(i), "blob", payload)
	}
	e.publish(evs...)
	e.waitFor("the write timeout", func() bool { return counterValue(t, metrics.SlowConsumerCloses) > slowBefore })
	for i := 0; ; i++ {
		m, err := c.readErr(20 * time.Second)
		if err != nil {
			if code := websocket.CloseStatus(err); code != StatusSlowConsumer {
				t.Fatalf("after %d events: %v, want close 4008", i, err)
			}
			if i == len(evs) {
				t.Fatalf("every event arrived: the write timeout did not cut in")
			}
			t.Logf("4008 after %d of %d events", i, len(evs))
			return
		}
		if i >= len(evs) || m.str("position") != evs[i].Position.String() {
			t.Fatalf("frame %d: %v", i, m["position"])
		}
	}
}
