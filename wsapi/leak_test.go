package wsapi

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Connections that end in every way the server knows (normal close, a
// client vanishing during a since wait, a slow consumer closed with 4008, a
// token expiring, bad frames closing with 1008) leave no goroutine behind.
func TestNoGoroutineLeakPerConnection(t *testing.T) {
	e := newEnv(t, envOpts{since: 3 * time.Second, cfg: func(c *Config) {
		c.SendQueue = 4
		c.PingInterval = 200 * time.Millisecond
	}})
	tok := adminToken(t)
	// Warm up the server's own goroutines. This connection stays: it
	// reads on, so it answers the server's pings (a client that does not
	// read is dropped after PingInterval), and the wait below is for every
	// other connection to be gone. (It used to be dropped by the ping,
	// which left the wait below to catch the token-expiry connection in its
	// teardown: a race that hung the test for 90 s in 2 of about 30 runs.)
	warm := e.dial(tok)
	warm.sync()
	go func() {
		for {
			if _, _, err := warm.ws.Read(e.ctx); err != nil {
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()

	for i := 0; i < 10; i++ {
		// Normal close after a subscription.
		a := e.dial(tok)
		a.sub("x", "y.1")
		a.ws.Close(websocket.StatusNormalClosure, "")

		// Gone during a since wait.
		b := e.dial(tok)
		b.send(msg{"type": "subscribe", "id": "w", "topics": []string{"x"}, "since": "FFFF/0:1"})
		time.Sleep(20 * time.Millisecond)
		b.ws.CloseNow()

		// Slow consumer: never reads.
		c := e.dial(tok)
		c.sub("slow")
		for j := 0; j < 20; j++ {
			e.publish(rec("slow", "create", "1"))
		}
		c.ws.CloseNow()

		// Protocol abuse.
		d := e.dial("")
		for j := 0; j < 30; j++ {
			if d.ws.Write(e.ctx, websocket.MessageText, []byte("nope")) != nil {
				break
			}
		}
		d.ws.CloseNow()
	}
	// Token expiry.
	x := e.dial(token(t, "u", "admin", 1500*time.Millisecond))
	x.sub("x")
	if code, _ := x.expectClose(10 * time.Second); code != StatusTokenExpired {
		t.Fatalf("expiry close %d", code)
	}

	e.waitFor("every connection to be gone", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return len(e.srv.conns) == 1
	})
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines, %d before the connections:\n%s", runtime.NumGoroutine(), base, buf.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
