package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/client"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
	"github.com/pgrealtime/pgrealtime/internal/proctest"
)

func TestMain(m *testing.M) {
	defer proctest.Cleanup()
	pgtest.Main(m)
}

const secret = "client-test-secret-0123456789abcdef"

var slotSeq atomic.Int64

// env is a database with posts and comments tables and a pgrealtime
// process serving it.
type env struct {
	t   *testing.T
	db  string
	srv *proctest.Server
	// rowBytes pads each written title to this size: rows big enough to
	// fill the socket buffers make a stalled client's queue overflow.
	rowBytes int
}

const rulesYAML = `collections:
  posts:
    read: "true"
  comments:
    read: "true"
`

func newEnv(t *testing.T, args ...string) *env {
	t.Helper()
	db := pgtest.NewDB(t)
	pgtest.Exec(t, db,
		`CREATE TABLE posts (id int PRIMARY KEY, title text, user_id text)`,
		`CREATE TABLE comments (id int PRIMARY KEY, body text)`)
	rules := writeRules(t)
	slot := fmt.Sprintf("client_%d_%d", os.Getpid(), slotSeq.Add(1))
	base := []string{"--database-url", db, "--slot", slot, "--config", rules, "--jwt-secret", secret}
	return &env{t: t, db: db, srv: proctest.Start(t, append(base, args...))}
}

// subscribe subscribes c to one topic, failing the test on error.
func subscribe(ctx context.Context, t *testing.T, c *client.Client, topic string) *client.Subscription {
	t.Helper()
	sub, err := c.Subscribe(ctx, []string{topic}, "")
	if err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
	return sub
}

// writeRules writes the tests' rules file and returns its path.
func writeRules(t *testing.T) string {
	t.Helper()
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte(rulesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	return rules
}

// token signs a user token valid for ttl.
func token(t *testing.T, sub string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "role": "user", "exp": time.Now().Add(ttl).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// exec runs one statement on the test database.
func (e *env) exec(ctx context.Context, sql string, args ...any) {
	e.t.Helper()
	conn, err := pgx.Connect(ctx, e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// writer inserts posts with ids from..to, one transaction each, on one
// connection; it reports the first error on the returned channel.
func (e *env) writer(ctx context.Context, from, to int, pause time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(ctx, e.db)
		if err != nil {
			done <- err
			return
		}
		defer conn.Close(context.Background())
		for i := from; i <= to; i++ {
			title := fmt.Sprint("post ", i)
			if pad := e.rowBytes - len(title); pad > 0 {
				title += strings.Repeat("x", pad)
			}
			if _, err := conn.Exec(ctx, `INSERT INTO posts (id, title) VALUES ($1, $2)`, i, title); err != nil {
				done <- err
				return
			}
			if pause > 0 {
				select {
				case <-time.After(pause): // the writer's pace, not a wait for a condition
				case <-ctx.Done():
					done <- ctx.Err()
					return
				}
			}
		}
		done <- nil
	}()
	return done
}

// recordID is the numeric id of a record event.
func recordID(t *testing.T, ev client.Event) int {
	t.Helper()
	var row struct {
		ID int `json:"id"`
	}
	if err := json.Unmarshal(ev.Record, &row); err != nil {
		t.Fatalf("record %s: %v", ev.Record, err)
	}
	return row.ID
}

// collectIDs reads record events until it has n ids (or the context ends)
// and fails on a gap.
func collectIDs(ctx context.Context, t *testing.T, sub *client.Subscription, n int) []int {
	t.Helper()
	var ids []int
	for len(ids) < n {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				t.Fatalf("events closed after %d of %d", len(ids), n)
			}
			if ev.Type == client.TypeGap {
				t.Fatalf("unexpected gap after %d events", len(ids))
			}
			ids = append(ids, recordID(t, ev))
		case <-ctx.Done():
			t.Fatalf("got %d of %d events: %v", len(ids), n, ids)
		}
	}
	return ids
}

// checkSequence fails unless ids is exactly from..to in order.
func checkSequence(t *testing.T, ids []int, from, to int) {
	t.Helper()
	if len(ids) != to-from+1 {
		t.Fatalf("got %d ids, want %d", len(ids), to-from+1)
	}
	for i, id := range ids {
		if id != from+i {
			t.Fatalf("ids[%d] = %d, want %d (each row once, in order)", i, id, from+i)
		}
	}
}

// states records a client's state changes.
type states struct {
	mu   sync.Mutex
	seen []client.State
}

func (s *states) add(st client.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, st)
}

func (s *states) count(st client.State) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, x := range s.seen {
		if x == st {
			n++
		}
	}
	return n
}
