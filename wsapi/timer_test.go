package wsapi

import (
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// The tests of the ping and expiry timer run on a fake clock (clock_test.go):
// time moves only when they say, so a busy machine cannot make a timer
// look early, late or spinning.

// connOf returns the server's side of cl.
func (e *env) connOf(cl *client) *conn {
	e.t.Helper()
	id := cl.connected.str("connection_id")
	var found *conn
	e.waitFor("the server's side of connection "+id, func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		for c := range e.srv.conns {
			if c.id == id {
				found = c
				return true
			}
		}
		return false
	})
	return found
}

// isPinging reports whether a ping waits for its pong.
func (c *conn) isPinging() bool {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	return c.pinging
}

// timerDue is when the connection's (fake) timer fires next; zero when it
// is not armed.
func (c *conn) timerDue() time.Time {
	due, _ := c.timerState()
	return due
}

// timerState is timerDue and how many times the timer was reset or
// stopped.
func (c *conn) timerState() (time.Time, int) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if ft, ok := c.timer.(*fakeTimer); ok {
		return ft.state()
	}
	return time.Time{}, 0
}

// expiresAt is the expiry of tok.
func expiresAt(t *testing.T, e *env, tok string) time.Time {
	t.Helper()
	id, err := e.srv.cfg.Verifier.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	return id.ExpiresAt
}

// An auth message while a ping waits for its pong re-arms the timer for the
// new token's expiry, and does not make it fire in a loop (tick re-armed
// for nextPing, which is in the past while pinging).
func TestAuthDuringPingDoesNotSpin(t *testing.T) {
	const ping = 30 * time.Second
	fc := newFakeClock()
	e := newEnv(t, envOpts{clock: fc, cfg: func(c *Config) { c.PingInterval = ping }})
	cl := e.dial(adminToken(t)) // reads nothing more: the ping waits for its pong
	c := e.connOf(cl)
	fc.Advance(ping)
	// tick sets pinging and re-arms the timer in one critical section:
	// once pinging, the timer is left alone until the auth message.
	e.waitFor("the ping", c.isPinging)
	fired, _ := fc.counts()
	_, touched := c.timerState()
	tok := token(t, "root", "admin", 2*time.Hour)
	exp := expiresAt(t, e, tok)
	cl.send(msg{"type": "auth", "token": tok})
	e.waitFor("the auth message to re-arm or stop the timer", func() bool {
		_, n := c.timerState()
		return n > touched
	})
	if f, _ := fc.counts(); f != fired {
		t.Fatalf("the timer fired %d times after an auth message during a ping, with nothing due: it spins", f-fired)
	}
	if due := c.timerDue(); !due.Equal(exp) {
		t.Fatalf("after the auth message the timer is due at %v, want the new token's expiry %v", due, exp)
	}
	if !c.isPinging() {
		t.Fatal("the ping no longer waits for its pong")
	}
}

// The token's expiry closes the connection (4001) at exp even while a ping
// waits for a pong that a slow reader sends late.
func TestExpiryDuringPing(t *testing.T) {
	const ping = 30 * time.Second
	fc := newFakeClock()
	e := newEnv(t, envOpts{clock: fc, cfg: func(c *Config) { c.PingInterval = ping }})
	tok := token(t, "alice", "admin", 45*time.Second) // between the ping (30 s) and the end of its wait (60 s)
	exp := expiresAt(t, e, tok)
	cl := e.dial(tok) // reads nothing more until after exp: the ping waits
	c := e.connOf(cl)
	fc.Advance(ping)
	e.waitFor("the ping", c.isPinging)
	fired, _ := fc.counts()
	fc.AdvanceTo(exp.Add(-time.Millisecond))
	if f, _ := fc.counts(); f != fired {
		t.Fatalf("a timer fired before exp")
	}
	fc.AdvanceTo(exp)
	if f, _ := fc.counts(); f == fired {
		t.Fatal("nothing fired at exp while a ping waited for its pong: the expiry waits for the pong")
	}
	if code, _ := cl.expectClose(10 * time.Second); code != StatusTokenExpired {
		t.Fatalf("close code %d, want 4001", code)
	}
}

// A peer that does not answer a ping within PingInterval is dropped; one
// that does stays, ping after ping.
func TestPingDropsDeadPeers(t *testing.T) {
	const ping = 30 * time.Second
	fc := newFakeClock()
	e := newEnv(t, envOpts{clock: fc, cfg: func(c *Config) { c.PingInterval = ping }})
	alive := e.dial("")
	readErr := make(chan error, 1)
	go func() { // reading answers pings
		_, _, err := alive.ws.Read(e.ctx)
		readErr <- err
	}()
	dead := e.dial("") // never reads: never answers a ping
	a, d := e.connOf(alive), e.connOf(dead)
	pingAnswered := func() bool { due := a.timerDue(); return !a.isPinging() && due.After(fc.Now()) }

	fc.Advance(ping)
	e.waitFor("the dead peer's ping", d.isPinging)
	e.waitFor("the live peer's pong", pingAnswered)
	if n := e.srv.count.Load(); n != 2 {
		t.Fatalf("%d connections while the dead peer's ping still waits, want 2", n)
	}
	fc.Advance(ping) // the dead peer's wait ends; the live one is pinged again
	e.waitFor("the dead peer to be dropped", func() bool { return e.srv.count.Load() == 1 })
	for i := 0; i < 2; i++ {
		e.waitFor("the live peer's pong", pingAnswered)
		fc.Advance(ping)
	}
	e.waitFor("the live peer's pong", pingAnswered)
	if n := e.srv.count.Load(); n != 1 {
		t.Fatalf("%d connections, want the live one", n)
	}
	select {
	case err := <-readErr:
		t.Fatalf("live client lost its connection: %v", err)
	default:
	}
}

// The token's expiry closes the connection with 4001 at exp, not before.
func TestExpiryCloses4001(t *testing.T) {
	fc := newFakeClock()
	e := newEnv(t, envOpts{clock: fc, cfg: func(c *Config) { c.PingInterval = time.Hour }})
	tok := token(t, "u1", "admin", time.Minute)
	exp := expiresAt(t, e, tok)
	cl := e.dial(tok)
	cl.sub("posts")
	fired, _ := fc.counts()
	fc.AdvanceTo(exp.Add(-time.Millisecond))
	if f, _ := fc.counts(); f != fired {
		t.Fatal("the timer fired before exp")
	}
	cl.sync() // still open
	fc.AdvanceTo(exp)
	if code, _ := cl.expectClose(10 * time.Second); code != StatusTokenExpired {
		t.Fatalf("close code %d, want 4001", code)
	}
}

// A new token (auth) moves the expiry: the connection outlives the first
// token.
func TestRefreshKeepsConnection(t *testing.T) {
	fc := newFakeClock()
	e := newEnv(t, envOpts{clock: fc, cfg: func(c *Config) { c.PingInterval = time.Hour }})
	tok := token(t, "u1", "admin", time.Minute)
	exp := expiresAt(t, e, tok)
	cl := e.dial(tok)
	cl.sub("posts")
	if r, _ := cl.request(msg{"type": "auth", "token": token(t, "u1", "admin", time.Hour)}); r.str("type") != "authenticated" {
		t.Fatalf("got %v", r)
	}
	c := e.connOf(cl)
	fc.AdvanceTo(exp.Add(time.Second))
	// Whether or not the timer fires at the first expiry, it ends armed
	// for a later one, or the connection closing.
	e.waitFor("the timer to be armed past the first expiry", func() bool { return c.timerDue().After(fc.Now()) || c.isDone() })
	if c.isDone() {
		t.Fatal("the connection closes at the first token's expiry after a refresh")
	}
	e.publish(rec("posts", "create", "1"))
	if got := cl.sync(); len(got) != 1 {
		t.Fatalf("got %d events", len(got))
	}
}

// Re-arming the timer on the system clock allocates nothing: arming runs
// at every auth message and after every ping of every connection.
func TestArmExpiryAllocatesNothing(t *testing.T) {
	b := broker.NewMemory(broker.Config{HistorySize: 1})
	defer b.Close()
	s, err := New(Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	c := s.newConn(nil, "", &auth.Identity{ExpiresAt: time.Now().Add(time.Hour)})
	c.nextPing = time.Now().Add(time.Hour)
	c.armExpiry()
	defer c.timer.Stop()
	if n := testing.AllocsPerRun(100, c.armExpiry); n != 0 {
		t.Fatalf("armExpiry allocates %v times", n)
	}
}
