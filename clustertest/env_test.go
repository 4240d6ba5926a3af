package clustertest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pgrealtime/pgrealtime/client"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
	"github.com/pgrealtime/pgrealtime/internal/proctest"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

func TestMain(m *testing.M) {
	defer proctest.Cleanup()
	pgtest.Main(m)
}

const (
	secret = "cluster-test-secret-0123456789abcdef"
	nodes  = 3
	// clientsPerNode × nodes clients, spread round robin.
	clients = 30
	// writeRate is the writer's steady rate, rows/s.
	writeRate = 200
	// Takeover bounds of PROTOCOL section 8: from the signal to the first
	// row written after it reaching a client.
	killTakeover = 10 * time.Second
	termTakeover = 2 * time.Second
	// catchUp bounds how long clients may take to have every row written
	// so far once the cluster is whole again.
	catchUp = 45 * time.Second
)

const rulesYAML = `collections:
  posts:
    read: "true"
  chat:
    read: "true"
`

var slotSeq atomic.Int64

// env is one cluster: a database with the posts table, a Redis with AOF,
// three nodes, and tokens.
type env struct {
	t     *testing.T
	db    string
	redis *redistest.Server
	c     *proctest.Cluster
	admin string // admin token (/api/cluster, /api/broadcast)
	user  string // the clients' token
}

// newEnv starts Redis (AOF, appendfsync always: a restart keeps every write
// it answered) and three nodes on a fresh database.
func newEnv(t *testing.T) *env {
	t.Helper()
	db := pgtest.NewDB(t)
	pgtest.Exec(t, db, `CREATE TABLE posts (id bigserial PRIMARY KEY, seq bigint NOT NULL)`)
	redis := redistest.Start(t, redistest.Options{AOF: true})
	if redis == nil {
		return nil // skipped
	}
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte(rulesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, redis: redis, admin: token(t, "tester", "admin"), user: token(t, "reader", "user")}
	slot := fmt.Sprintf("cluster_%d_%d", os.Getpid(), slotSeq.Add(1))
	e.c = proctest.StartCluster(t, proctest.ClusterConfig{
		Nodes: nodes, DatabaseURL: db, RedisURL: redis.URL(), Slot: slot,
		Args:       []string{"--jwt-secret", secret, "--config", rules, "--log-level", "info"},
		AdminToken: e.admin,
	})
	t.Cleanup(func() {
		if t.Failed() {
			for i, n := range e.c.Nodes {
				t.Logf("%s (%s) output, last 6000 bytes:\n%s", e.c.IDs[i], n.Addr, tail(n.Output(), 6000))
			}
		}
	})
	return e
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// token signs a token with role for one hour.
func token(t *testing.T, sub, role string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "role": role, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// clusterURL is the address clients dial; the balancer's dialer decides
// which node it reaches.
const clusterURL = "ws://pgrealtime-cluster/realtime"

// conn is one client and the node its current connection went to.
type conn struct {
	home int
	node atomic.Int32 // index of the node of the last connection
	c    *client.Client
}

// dial connects a client whose home is node home, through the balancer.
func (e *env) dial(ctx context.Context, home int) *conn {
	e.t.Helper()
	cn := &conn{home: home}
	cn.node.Store(-1)
	hc := &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext:       e.balancer(home, &cn.node),
	}}
	c, err := client.Dial(ctx, clusterURL, client.Options{
		Token: e.user, HTTPClient: hc,
		// Short backoff: the suite measures the server, not the client's
		// patience.
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		EventBuffer: 4096,
	})
	if err != nil {
		e.t.Fatalf("client of %s: %v", e.c.IDs[home], err)
	}
	e.t.Cleanup(func() { c.Close() })
	cn.c = c
	return cn
}

// balancer is a load balancer's choice of node, with its health check: the
// home node when it is ready (/readyz 200), else the next ready one; with
// no node ready the connection is refused (the client retries).
func (e *env) balancer(home int, chosen *atomic.Int32) func(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var lastErr error
		for k := 0; k < nodes; k++ {
			i := (home + k) % nodes
			if !e.c.Healthy(ctx, i) {
				continue
			}
			nc, err := d.DialContext(ctx, network, e.c.Nodes[i].Addr)
			if err == nil {
				chosen.Store(int32(i))
				return nc, nil
			}
			lastErr = err
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("no node is ready")
		}
		return nil, lastErr
	}
}

// load is the steady state of the suite: clients subscribed to posts,
// spread round robin over the nodes, a checker reading them, and a writer.
type load struct {
	e     *env
	conns []*conn
	chk   *checker
	w     *writer
}

// startLoad subscribes the clients, then starts the writer, and waits until
// every client has received the first rows.
func (e *env) startLoad(ctx context.Context) *load {
	e.t.Helper()
	l := &load{e: e, chk: newChecker()}
	for i := 0; i < clients; i++ {
		cn := e.dial(ctx, i%nodes)
		sub, err := cn.c.Subscribe(ctx, []string{"posts"}, "")
		if err != nil {
			e.t.Fatalf("client %d subscribe posts: %v", i, err)
		}
		l.conns = append(l.conns, cn)
		l.chk.watch(fmt.Sprintf("client %d (home %s)", i, e.c.IDs[i%nodes]), sub)
	}
	l.w = startWriter(ctx, e.t, e.db, writeRate)
	l.waitCaughtUp(ctx, 50)
	return l
}

// waitCaughtUp waits until every client has every row up to seq.
func (l *load) waitCaughtUp(ctx context.Context, seq int64) {
	l.e.t.Helper()
	if err := l.chk.waitAll(ctx, seq, catchUp); err != nil {
		l.e.t.Fatal(err)
	}
}

// takeover measures, for a signal sent by act, the time from the signal to
// the first row written after it reaching any client, and checks it against
// bound.
func (l *load) takeover(ctx context.Context, what string, bound time.Duration, act func()) time.Duration {
	l.e.t.Helper()
	first := l.w.next()
	at := time.Now()
	act()
	got, err := l.chk.waitFirst(ctx, first, bound+20*time.Second)
	if err != nil {
		l.e.t.Fatalf("%s: %v", what, err)
	}
	took := got.Sub(at)
	l.e.t.Logf("%s: %s from the signal to the first row written after it at a client (bound %s)", what, took.Round(time.Millisecond), bound)
	if took > bound {
		l.e.t.Errorf("%s: takeover took %s, PROTOCOL 8 promises at most %s", what, took.Round(time.Millisecond), bound)
	}
	return took
}

// finish stops the writer, waits until every client has every row, and
// checks what the checker saw. allowGaps: a gap is accepted after a gap
// event (else any gap event is an error).
func (l *load) finish(ctx context.Context, allowGaps bool) {
	l.e.t.Helper()
	last := l.w.stop()
	l.waitCaughtUp(ctx, last)
	l.chk.verify(l.e.t, last, allowGaps)
}
