package cluster

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

func TestNewNamesMissingField(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Slot: "s", NodeID: "n"}, "DatabaseURL"},
		{Config{DatabaseURL: "postgres://x/y", NodeID: "n"}, "Slot"},
		{Config{DatabaseURL: "postgres://x/y", Slot: "s"}, "NodeID"},
		{Config{DatabaseURL: "::not a url", Slot: "s", NodeID: "n"}, "database URL"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}

// The key is the one docs/cluster.md defines, computed here by Postgres
// itself, and it is the key the leader holds in pg_locks.
func TestLockKeyIsHeldByLeader(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	a := startNode(t, newElector(t, url, "my_slot", "a"))
	a.waitLead(t, 30*time.Second)

	var sqlKey int64
	if err := admin.QueryRow(context.Background(), `SELECT ('x' || encode(substr(sha256(convert_to('pgrealtime slot ' || $1, 'UTF8')), 1, 8), 'hex'))::bit(64)::int8`, "my_slot").Scan(&sqlKey); err != nil {
		t.Fatal(err)
	}
	if got := LockKey("my_slot"); got != sqlKey {
		t.Fatalf("LockKey = %d, Postgres computes %d", got, sqlKey)
	}
	var app string
	if err := admin.QueryRow(context.Background(), `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid::int8 = ($1::int8 >> 32) & 4294967295 AND l.objid::int8 = $1::int8 & 4294967295 AND l.objsubid = 1`, sqlKey).Scan(&app); err != nil {
		t.Fatal(err)
	}
	if app != AppName("a") {
		t.Fatalf("lock held by %q, want %q", app, AppName("a"))
	}
	if LockKey("other_slot") == sqlKey {
		t.Fatal("two slots share a key")
	}
}

// The lock session runs with the parameters of docs/cluster.md section 8.
func TestSessionParameters(t *testing.T) {
	url := pgtest.NewDB(t)
	cfg, err := sessionConfig(url+"&application_name=other", "n1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	want := map[string]string{
		"application_name":                    "pgrealtime-leader:n1",
		"idle_session_timeout":                "0",
		"statement_timeout":                   "0",
		"idle_in_transaction_session_timeout": "0",
		"lock_timeout":                        "0",
		"tcp_keepalives_idle":                 "2", // s
		"tcp_keepalives_interval":             "1", // s
		"tcp_keepalives_count":                "2",
		"tcp_user_timeout":                    "4000", // ms
		"client_connection_check_interval":    "1000", // ms
	}
	for k, v := range want {
		var got string
		if err := conn.QueryRow(ctx, `SELECT setting FROM pg_settings WHERE name = $1`, k).Scan(&got); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestOnlyOneLeads(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	a := startNode(t, newElector(t, url, "s", "a"))
	a.waitLead(t, 30*time.Second)
	b := startNode(t, newElector(t, url, "s", "b"))
	waitQueued(t, admin, "b")
	b.notLeading(t)
	if !a.e.Leading() {
		t.Fatal("a does not say it leads")
	}
	// Another slot is another election.
	c := startNode(t, newElector(t, url, "other", "c"))
	c.waitLead(t, 30*time.Second)
}

func TestGracefulStopHandsOverWithin2s(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	a := startNode(t, newElector(t, url, "s", "a"))
	aTerm := a.waitLead(t, 30*time.Second)
	b := startNode(t, newElector(t, url, "s", "b"))
	waitQueued(t, admin, "b")

	start := time.Now()
	a.cancel()
	b.waitLead(t, 2*time.Second)
	t.Logf("handover after graceful stop: %v", time.Since(start))
	select {
	case <-aTerm.Done():
	default:
		t.Fatal("b leads while a's term is not over")
	}
}

// pg_terminate_backend of the lock session from outside (what the server
// does to a session whose node it lost) ends the leader's term within 2.5 s
// and the waiting node leads.
func TestLostSessionEndsTermWithin2500ms(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	a := startNode(t, newElector(t, url, "s", "a"))
	aTerm := a.waitLead(t, 30*time.Second)
	b := startNode(t, newElector(t, url, "s", "b"))
	waitQueued(t, admin, "b")

	pid := lockPID(t, admin, "a")
	if _, err := admin.Exec(context.Background(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.waitLead(t, 2500*time.Millisecond)
	select {
	case <-aTerm.Done():
	case <-time.After(2500*time.Millisecond - time.Since(start)):
		t.Fatal("a's term did not end within 2.5 s of losing its session")
	}
	t.Logf("a's term ended after %v", time.Since(start))
	if c := context.Cause(aTerm); !errors.Is(c, ErrSessionLost) {
		t.Fatalf("cause = %v, want ErrSessionLost", c)
	}
}

// A node waiting for the lock never ends the leader's sessions.
func TestWaiterNeverEndsLeaderSessions(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	ea := newElector(t, url, "s", "a")
	ea.cfg.CheckTimeout = 10 * time.Second // a slow check on a busy machine must not change the pids
	checks := make(chan struct{}, 64)
	ea.checked = func() {
		select {
		case checks <- struct{}{}:
		default:
		}
	}
	// The leader's other work: a session of its own beside the lock.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leading := make(chan context.Context, 1)
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		_ = ea.Run(ctx, func(ctx context.Context) error {
			cfg, err := pgx.ParseConfig(url)
			if err != nil {
				return err
			}
			cfg.RuntimeParams["application_name"] = "pgrealtime-reader:a"
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			select {
			case leading <- ctx:
			default: // a later term: the test looks at the first only
			}
			<-ctx.Done()
			return nil
		})
	}()
	defer func() { cancel(); <-aDone }()
	var aTerm context.Context
	select {
	case aTerm = <-leading:
	case <-time.After(30 * time.Second):
		t.Fatal("a did not lead")
	}
	pids := func() []int32 {
		rows, err := admin.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE application_name IN ($1, 'pgrealtime-reader:a') ORDER BY pid`, AppName("a"))
		if err != nil {
			t.Fatal(err)
		}
		ps, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	before := pids()
	if len(before) != 2 {
		t.Fatalf("leader sessions = %v, want 2", before)
	}

	b := startNode(t, newElector(t, url, "s", "b"))
	waitQueued(t, admin, "b")
	for len(checks) > 0 { // count only checks after b queued
		<-checks
	}
	for i := range 2 {
		select {
		case <-checks:
		case <-time.After(10 * time.Second):
			t.Fatalf("health check %d of the leader did not run", i+1)
		}
	}
	if after := pids(); !slices.Equal(before, after) {
		t.Fatalf("leader sessions were %v, now %v", before, after)
	}
	if aTerm.Err() != nil {
		t.Fatalf("a's term ended: %v", context.Cause(aTerm))
	}
	b.notLeading(t)
	waitQueued(t, admin, "b")
}

// A leader process killed with SIGKILL is replaced within 10 s.
func TestKilledLeaderProcessReplacedWithin10s(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=killed", helperURLEnv+"="+url, helperSlotEnv+"=s")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	said := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		said <- line
	}()
	select {
	case line := <-said:
		if strings.TrimSpace(line) != "leading" {
			t.Fatalf("helper said %q", line)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("helper process did not lead")
	}
	b := startNode(t, newElector(t, url, "s", "b"))
	waitQueued(t, admin, "b")

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.waitLead(t, 10*time.Second)
	t.Logf("takeover after SIGKILL: %v", time.Since(start))
}

// A leader that is not ready (Redis lost) for ReadyGrace steps down and
// does not queue again until it is ready.
func TestNotReadyStepsDown(t *testing.T) {
	url := pgtest.NewDB(t)
	admin := connect(t, url)
	// Each failing Ready call looks whether a is queued for the lock at
	// that moment, on a connection of its own.
	probe := connect(t, url)
	var (
		broken              atomic.Bool
		mu                  sync.Mutex
		failedCalls, queued int
	)
	ea := newElector(t, url, "s", "a")
	ea.cfg.ReadyGrace = time.Second
	ea.cfg.Ready = func(ctx context.Context) error {
		if !broken.Load() {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		var n int
		if err := probe.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, AppName("a")).Scan(&n); err == nil {
			failedCalls++
			queued += n
		}
		return errors.New("redis unreachable")
	}
	a := startNode(t, ea)
	aTerm := a.waitLead(t, 30*time.Second)
	b := startNode(t, newElector(t, url, "s", "b"))
	waitQueued(t, admin, "b")

	broken.Store(true)
	b.waitLead(t, 10*time.Second)
	if c := context.Cause(aTerm); !errors.Is(c, ErrNotReady) {
		t.Fatalf("cause = %v, want ErrNotReady", c)
	}
	mu.Lock()
	seen := failedCalls
	mu.Unlock()
	waitUntil(t, 20*time.Second, "a checks Ready 3 more times", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failedCalls >= seen+3
	})
	mu.Lock()
	if queued != 0 {
		t.Errorf("a was queued for the lock during %d of %d failing Ready checks", queued, failedCalls)
	}
	mu.Unlock()
	broken.Store(false)
	waitQueued(t, admin, "a")
}
