package wsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

var testSecret = []byte("wsapi-test-secret-0123456789abcdef")

// env is a running server on a real in-process broker.
type env struct {
	t      *testing.T
	ctx    context.Context
	broker *broker.Memory
	srv    *Server
	hs     *httptest.Server
	wsURL  string
	lsn    atomic.Uint64
}

type envOpts struct {
	history int
	rules   *rules.Config // nil: no rules (admin only)
	noAuth  bool          // no verifier
	since   time.Duration // sinceWait (default SinceWait)
	cfg     func(*Config)
	conn    func(net.Conn) net.Conn // wraps every accepted server-side connection
	timeout time.Duration           // the test's deadline (default 90 s)
	noBase  bool                    // no stream start position (a real reader gives it)
	clock   clock                   // of the ping and expiry timers (default: the system clock)
}

// newEnv starts a server. Every test gets a deadline through e.ctx.
func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	t.Cleanup(cancel)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	var set *rules.Set
	if o.rules != nil {
		var err error
		if set, err = rules.Compile(o.rules, DefaultAdminRole); err != nil {
			t.Fatalf("compile rules: %v", err)
		}
	} else {
		set = nil
	}
	bcfg := broker.Config{HistorySize: o.history, Logger: log}
	if o.history == 0 {
		bcfg.HistorySize = 1000
	}
	if set != nil {
		bcfg.Prepare = set.Prepare
	}
	b := broker.NewMemory(bcfg)
	cfg := Config{Broker: b, Logger: log}
	if set != nil {
		cfg.Rules = set
	}
	if !o.noAuth {
		v, err := auth.NewVerifier(auth.Config{HS256Secret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Verifier = v
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if o.since > 0 {
		srv.sinceWait = o.since
	}
	if o.clock != nil {
		srv.clock = o.clock
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	if o.conn != nil {
		hs.Listener = wrapListener{hs.Listener, o.conn}
	}
	hs.Start()
	e := &env{t: t, ctx: ctx, broker: b, srv: srv, hs: hs, wsURL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/realtime"}
	e.lsn.Store(0x1000000)
	if !o.noBase {
		// The stream's start position, as the WAL reader gives it when it
		// connects: subscribed replies carry it before the first event.
		b.SetBase(broker.Position{LSN: e.lsn.Load()})
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
		b.Close()
	})
	return e
}

// token signs an HS256 token for sub/role expiring after ttl (0: no exp).
func token(t testing.TB, sub, role string, ttl time.Duration, extra ...any) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub}
	if role != "" {
		claims["role"] = role
	}
	if ttl != 0 {
		claims["exp"] = time.Now().Add(ttl).Unix()
	}
	for i := 0; i+1 < len(extra); i += 2 {
		claims[extra[i].(string)] = extra[i+1]
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func adminToken(t testing.TB) string { return token(t, "root", "admin", time.Hour) }

// client is a real WebSocket client.
type client struct {
	t         testing.TB
	ctx       context.Context
	ws        *websocket.Conn
	connected msg
	seq       int
}

type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }

func (m msg) strs(k string) []string {
	a, _ := m[k].([]any)
	out := make([]string, 0, len(a))
	for _, v := range a {
		out = append(out, v.(string))
	}
	return out
}

type dialOpt struct {
	header http.Header
	query  string
}

func (e *env) dialRaw(o dialOpt) (*websocket.Conn, *http.Response, error) {
	u := e.wsURL
	if o.query != "" {
		u += "?" + o.query
	}
	return websocket.Dial(e.ctx, u, &websocket.DialOptions{HTTPHeader: o.header})
}

// dial connects with an optional bearer token and reads the connected frame.
func (e *env) dial(tok string) *client {
	e.t.Helper()
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	ws, resp, err := e.dialRaw(dialOpt{header: h})
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = fmt.Sprintf(" (HTTP %d %s)", resp.StatusCode, b)
		}
		e.t.Fatalf("dial: %v%s", err, body)
	}
	return e.wrap(ws)
}

func (e *env) wrap(ws *websocket.Conn) *client {
	e.t.Helper()
	ws.SetReadLimit(1 << 24)
	c := &client{t: e.t, ctx: e.ctx, ws: ws}
	e.t.Cleanup(func() { ws.CloseNow() })
	c.connected = c.read()
	if c.connected.str("type") != "connected" {
		e.t.Fatalf("first frame is %v, want connected", c.connected)
	}
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch x := v.(type) {
	case []byte:
		b = x
	case string:
		b = []byte(x)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := c.ws.Write(c.ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readErr reads one frame within 10 s.
func (c *client) readErr(timeout time.Duration) (msg, error) {
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	typ, b, err := c.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("got a %v frame", typ)
	}
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("frame is not a JSON object: %s", b)
	}
	return m, nil
}

func (c *client) read() msg {
	c.t.Helper()
	m, err := c.readErr(10 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

// request sends m with a fresh id and returns the reply with that id;
// frames before it (events) are returned in before.
func (c *client) request(m msg) (reply msg, before []msg) {
	c.t.Helper()
	c.seq++
	id := fmt.Sprintf("r%d", c.seq)
	m["id"] = id
	c.send(m)
	for {
		r := c.read()
		if r.str("id") == id && r.str("type") != "record_event" && r.str("type") != "custom_event" {
			return r, before
		}
		before = append(before, r)
	}
}

// sub subscribes and fails the test unless the reply is subscribed.
func (c *client) sub(topics ...string) msg {
	c.t.Helper()
	r, before := c.request(msg{"type": "subscribe", "topics": topics})
	if r.str("type") != "subscribed" || len(before) > 0 {
		c.t.Fatalf("subscribe %v: got %v (after %v)", topics, r, before)
	}
	return r
}

// expectError sends m and checks the error reply's code.
func (c *client) expectError(m msg, code string) msg {
	c.t.Helper()
	r, _ := c.request(m)
	if r.str("type") != "error" || r.str("code") != code {
		c.t.Fatalf("%v: got %v, want error %s", m, r, code)
	}
	if r.str("message") == "" {
		c.t.Fatalf("%v: error without message: %v", m, r)
	}
	return r
}

// sync sends a ping and returns every event received before the pong:
// everything the broker delivered before the call.
func (c *client) sync() []msg {
	c.t.Helper()
	r, before := c.request(msg{"type": "ping"})
	if r.str("type") != "pong" {
		c.t.Fatalf("ping: got %v", r)
	}
	return before
}

// expectClose reads until the connection closes and returns the status.
func (c *client) expectClose(timeout time.Duration) (websocket.StatusCode, string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, _, err := func() (websocket.MessageType, []byte, error) {
			ctx, cancel := context.WithDeadline(c.ctx, deadline)
			defer cancel()
			return c.ws.Read(ctx)
		}()
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}

// publish publishes one transaction of events and returns them positioned.
func (e *env) publish(evs ...*broker.Event) []*broker.Event {
	e.t.Helper()
	lsn := e.lsn.Add(0x100)
	now := time.Now().UTC()
	for i, ev := range evs {
		ev.Position = broker.Position{LSN: lsn, Index: uint32(i + 1)}
		if ev.Timestamp.IsZero() {
			ev.Timestamp = now
		}
	}
	if err := e.broker.Append(e.ctx, &broker.Tx{CommitLSN: lsn, EndLSN: lsn + 0x10, CommitTime: now, Events: evs}); err != nil {
		e.t.Fatalf("publish: %v", err)
	}
	return evs
}

func rec(coll, action, id string, cols ...any) *broker.Event {
	ev := &broker.Event{Kind: broker.KindRecord, Collection: coll, Action: action, RecordID: id}
	var row broker.Row
	for i := 0; i+1 < len(cols); i += 2 {
		row = append(row, broker.Column{Name: cols[i].(string), Value: cols[i+1]})
	}
	if action != broker.ActionTruncate {
		row = append(broker.Row{{Name: "id", Value: id}}, row...)
		ev.Record = row
	}
	return ev
}

// positions lists the "position" of each frame.
func positions(ms []msg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.str("position")
	}
	return out
}

func counterValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge")
	return 0
}

// httpDo performs a request against the server and decodes the JSON body.
func (e *env) httpDo(method, path, tok string, body string) (int, map[string]any, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.hs.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m, b
}

// waitFor polls cond until it holds or the test's deadline.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	for !cond() {
		select {
		case <-e.ctx.Done():
			var buf bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			e.t.Fatalf("timed out waiting for %s; goroutines:\n%s", what, buf.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var _ = sync.Mutex{}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// wrapListener wraps every accepted connection with wrap.
type wrapListener struct {
	net.Listener
	wrap func(net.Conn) net.Conn
}

func (l wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.wrap(c), nil
}
