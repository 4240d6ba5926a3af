package wsapi

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// More stalled sockets than the write pool has workers: their data waits
// in flusher goroutines of their own (blocking writes under WriteTimeout),
// and a healthy connection still gets every event at once. A pool whose
// workers wrote with blocking writes would hold it up for WriteTimeout.
func TestStalledSocketsDoNotHoldUpThePool(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) {
		c.SendQueue = 100000
		c.WriteTimeout = 20 * time.Second
	}})
	tok := adminToken(t)
	// The stalled clients have a small receive buffer (no autotuning to
	// tens of MB on loopback), so that their sockets fill quickly.
	small := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8192) })
			return serr
		},
	}).DialContext}}
	stalled := make([]*client, 2*runtime.GOMAXPROCS(0)+2)
	for i := range stalled {
		ws, _, err := websocket.Dial(e.ctx, e.wsURL+"?access_token="+tok, &websocket.DialOptions{HTTPClient: small})
		if err != nil {
			t.Fatal(err)
		}
		stalled[i] = e.wrap(ws)
		stalled[i].sub("big")
	}
	healthy := e.dial(tok)
	healthy.sub("small")
	slowBefore := counterValue(t, metrics.SlowConsumerCloses)

	// Fill the stalled clients' sockets (they never read): 64 KiB events
	// until every one of them has data the socket would not take.
	payload := strings.Repeat("x", 64<<10)
	for i := 0; i < 100; i++ {
		e.publish(rec("big", "create", fmt.Sprint(i), "blob", payload))
	}
	e.waitFor("every stalled connection to have a backlog", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		n := 0
		for c := range e.srv.conns {
			if c.queued() > 0 {
				n++
			}
		}
		return n == len(stalled)
	})

	for i := 0; i < 20; i++ {
		start := time.Now()
		e.publish(rec("small", "create", fmt.Sprint(i)))
		m := healthy.read()
		if m.str("record_id") != fmt.Sprint(i) {
			t.Fatalf("healthy client got %v, want small %d", m, i)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("event %d reached the healthy client after %v: the stalled sockets held up the writers", i, d)
		}
	}
	if d := counterValue(t, metrics.SlowConsumerCloses) - slowBefore; d != 0 {
		t.Fatalf("%v slow-consumer closes before WriteTimeout", d)
	}
}
