package wsapi

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// 500 clients connect, subscribe and receive concurrently (run under -race).
func TestConcurrentClients(t *testing.T) {
	const (
		clients = 500
		rooms   = 10
		events  = 20 // per room
	)
	e := newEnv(t, envOpts{})
	tok := adminToken(t)
	var (
		ready  sync.WaitGroup
		done   sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		counts = make([]int, clients)
	)
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	ready.Add(clients)
	done.Add(clients)
	start := make(chan struct{})
	for i := 0; i < clients; i++ {
		go func() {
			defer done.Done()
			c := &client{t: t, ctx: e.ctx}
			ws, _, err := e.dialRaw(dialOpt{query: "access_token=" + tok})
			if err != nil {
				fail(fmt.Errorf("client %d: dial: %w", i, err))
				ready.Done()
				return
			}
			defer ws.CloseNow()
			c.ws = ws
			if m, err := c.readErr(30 * time.Second); err != nil || m.str("type") != "connected" {
				fail(fmt.Errorf("client %d: connected: %v %v", i, m, err))
				ready.Done()
				return
			}
			// Half by collection, half by record: each gets the events of one room.
			topic := fmt.Sprintf("room.%d", i%rooms)
			if i%2 == 0 {
				topic = fmt.Sprintf("room%d", i%rooms)
			}
			ws.Write(e.ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"subscribe","id":"s","topics":[%q]}`, topic)))
			if m, err := c.readErr(30 * time.Second); err != nil || m.str("type") != "subscribed" {
				fail(fmt.Errorf("client %d: subscribe: %v %v", i, m, err))
				ready.Done()
				return
			}
			ready.Done()
			<-start
			if i%10 == 0 {
				// Some clients re-authenticate while events flow: the identity
				// swap races with deliveries (checked by -race).
				go func() {
					for range 5 {
						ws.Write(e.ctx, websocket.MessageText, []byte(`{"type":"auth","token":"`+tok+`"}`))
						time.Sleep(time.Millisecond)
					}
				}()
			}
			last := ""
			for counts[i] < events {
				m, err := c.readErr(30 * time.Second)
				if err != nil {
					fail(fmt.Errorf("client %d after %d events: %w", i, counts[i], err))
					return
				}
				if m.str("type") == "authenticated" {
					continue
				}
				if p := m.str("position"); p <= last && len(p) == len(last) {
					fail(fmt.Errorf("client %d: position %s after %s", i, p, last))
				}
				last = m.str("position")
				counts[i]++
			}
		}()
	}
	ready.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if n := counterValue(t, metrics.Connections); n < clients {
		t.Errorf("connections gauge %v", n)
	}
	close(start)
	for j := 0; j < events; j++ {
		for r := 0; r < rooms; r++ {
			// room<r> for collection subscribers, room.<j> records for the others.
			e.publish(rec(fmt.Sprintf("room%d", r), "create", "x"), rec("room", "create", fmt.Sprint(r)))
		}
	}
	done.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	for i, n := range counts {
		if n != events {
			t.Fatalf("client %d got %d events, want %d", i, n, events)
		}
	}
}
