package wsapi

import (
	"syscall"
	"testing"
	"time"
)

func processCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// An auth message while a ping waits for its pong must not make the timer
// fire in a loop (tick re-arms for nextPing, which is in the past while
// pinging).
func TestAuthDuringPingDoesNotSpin(t *testing.T) {
	const ping = 3 * time.Second
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.PingInterval = ping }})
	c := e.dial(adminToken(t)) // never reads after this: the ping waits for its pong
	time.Sleep(ping + 300*time.Millisecond)
	idle0 := processCPU(t)
	time.Sleep(500 * time.Millisecond)
	idle := processCPU(t) - idle0
	c.send(msg{"type": "auth", "token": adminToken(t)})
	time.Sleep(100 * time.Millisecond)
	t0 := processCPU(t)
	w0 := time.Now()
	time.Sleep(1 * time.Second)
	used := processCPU(t) - t0
	t.Logf("CPU while the ping waits: %v before the auth message (500ms), %v in the %v after it", idle, used, time.Since(w0))
	if used > 400*time.Millisecond {
		t.Fatalf("the process used %v CPU in 1 s after an auth message during a ping: the timer spins", used)
	}
}

// The token's expiry closes the connection (4001) at exp even while a ping
// waits for a pong that a slow reader sends late.
func TestExpiryDuringPing(t *testing.T) {
	const ping = 4 * time.Second
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.PingInterval = ping }})
	tok := token(t, "alice", "admin", 6*time.Second)
	id, err := e.srv.cfg.Verifier.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	exp := id.ExpiresAt
	cl := e.dial(tok) // reads nothing more until after exp: the ping at 4 s waits
	e.srv.mu.Lock()
	var c *conn
	for x := range e.srv.conns {
		c = x
	}
	e.srv.mu.Unlock()
	time.Sleep(time.Until(exp.Add(700 * time.Millisecond)))
	done := c.isDone()
	t.Logf("exp %v ago; connection closing: %v", time.Since(exp), done)
	go cl.ws.Read(e.ctx) // answer the ping now
	if !done {
		t.Fatalf("token expired %v ago and the connection is still open: the expiry waits for the ping's pong", time.Since(exp))
	}
}
