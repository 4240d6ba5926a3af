// Package pgtest is the one shared test helper that gives tests a real
// PostgreSQL with wal_level=logical.
//
// By default a throwaway cluster is started once per test binary (free port,
// socket in a temp dir, fsync off) and each NewDB call creates a fresh
// database on it. When PGREALTIME_TEST_DATABASE is set, databases are created
// on that server instead. When no Postgres can be had, tests are skipped —
// except under CI=true, where that is a failure.
//
// Packages that use it call pgtest.Main from TestMain so that the shared
// cluster is stopped when the tests end.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

// EnvDatabase names the variable that points tests at an existing server.
const EnvDatabase = "PGREALTIME_TEST_DATABASE"

var (
	sharedMu  sync.Mutex
	shared    *pgcluster.Cluster
	sharedErr error
	dbSeq     atomic.Int64
)

// Main runs the tests and stops the shared cluster afterwards.
func Main(m *testing.M) {
	code := m.Run()
	sharedMu.Lock()
	if shared != nil {
		shared.Close()
	}
	sharedMu.Unlock()
	os.Exit(code)
}

// unavailable skips the test, or fails it under CI=true.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("postgres is required under CI=true: %v", err)
	}
	t.Skipf("postgres not available (set %s or install postgresql): %v", EnvDatabase, err)
}

func sharedCluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared, sharedErr = pgcluster.Start(ctx, pgcluster.Options{})
	}
	if sharedErr != nil {
		unavailable(t, sharedErr)
	}
	return shared
}

// adminURL is the URL of a database on which CREATE DATABASE can run.
func adminURL(t testing.TB) string {
	if u := os.Getenv(EnvDatabase); u != "" {
		return u
	}
	return sharedCluster(t).URL("postgres")
}

// NewDB creates a fresh, empty database and returns its URL. The database,
// and any replication slot in it, is dropped when the test ends.
func NewDB(t testing.TB) string {
	t.Helper()
	admin := adminURL(t)
	name := fmt.Sprintf("pgrt_%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		unavailable(t, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() { dropDB(admin, name) })
	return WithDatabase(t, admin, name)
}

// WithDatabase returns u with its database name replaced.
func WithDatabase(t testing.TB, u, db string) string {
	t.Helper()
	if strings.Contains(u, "://") {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("parse %s: %v", EnvDatabase, err)
		}
		pu.Path = "/" + db
		return pu.String()
	}
	// key=value DSN
	return u + " dbname=" + db
}

func dropDB(admin, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	// Replication connections and slots keep a database alive.
	for i := 0; i < 50; i++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
}

// NewCluster starts a private cluster that the test may stop and restart. It
// is stopped and removed when the test ends. With PGREALTIME_TEST_DATABASE
// set and no local binaries, the test is skipped (it needs control of the
// server), or fails under CI=true.
func NewCluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Exec runs SQL statements on url, failing the test on error.
func Exec(t testing.TB, url string, sql ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	for _, s := range sql {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("exec %q: %v", s, err)
		}
	}
}
