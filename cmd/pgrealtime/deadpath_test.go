package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

// deadPathRecovery is the bound: from the moment the path to
// Postgres goes dead, a row written meanwhile reaches subscribers within it
// once new connections work again.
const deadPathRecovery = 15 * time.Second

// viaProxy returns dbURL with its host:port replaced by addr.
func viaProxy(t *testing.T, dbURL, addr string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// TestDeadPathRecovers: pgrealtime reaches Postgres through a TCP path that
// stops carrying packets without closing (blackholing proxy); a row is
// written meanwhile (directly, not through the path); new connections work
// again at once (a NAT or firewall that dropped its state). Postgres still
// holds the old, dead walsender on the slot until wal_sender_timeout (60 s
// by default), so the row arrives in time only if pgrealtime notices the
// dead path, ends its own dead walsender and takes the slot back.
func TestDeadPathRecovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newServeSetup(t, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)
	requireDefaultWalSenderTimeout(ctx, t, s.url)
	pu, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newBlackholeProxy(t, pu.Host)
	direct := s.url
	s.url = viaProxy(t, s.url, proxy.Addr())
	srv := s.start(ctx, t)

	c := dialWS(ctx, t, srv.addr, adminToken(t))
	if r, _ := c.subscribe(ctx, "1", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("subscribe: %v", r)
	}
	execSQL(ctx, t, direct, `INSERT INTO posts (title) VALUES ('before')`)
	before := c.nextEvent(ctx)
	if recordTitle(before) != "before" {
		t.Fatalf("event %v", before)
	}
	// Idle from here: the event is acknowledged and checkpointed, so that
	// nothing but noticing the silence can tell the reader the path died.
	waitCheckpoint(ctx, t, direct, s.slot, before.str("position"))

	proxy.Blackhole()
	start := time.Now()
	execSQL(ctx, t, direct, `INSERT INTO posts (title) VALUES ('during')`)
	proxy.Restore()

	// Wait well past the bound so that a failure says how long it took.
	ev := c.nextEvent(ctx)
	took := time.Since(start)
	if recordTitle(ev) != "during" {
		t.Fatalf("after the dead path: %v", ev)
	}
	t.Logf("row written during the dead path delivered %.1f s after the path went dead", took.Seconds())
	if took > deadPathRecovery {
		t.Errorf("recovered after %v, want within %v", took.Round(100*time.Millisecond), deadPathRecovery)
	}
	srv.waitHTTP(ctx, "http://"+srv.addr+"/readyz", 200)
	// The NOTIFY listener, on the same dead path, reconnected too.
	waitNotify(ctx, t, c, direct)
	logs := srv.stderr.String()
	if !strings.Contains(logs, "ended this process's own previous replication connection") {
		t.Errorf("no log line says the dead walsender was ended:\n%s", tail(logs, 4000))
	}
	srv.signal(syscall.SIGTERM)
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// requireDefaultWalSenderTimeout: the dead-path test proves something only
// if Postgres keeps a dead walsender for long (the default 60 s).
func requireDefaultWalSenderTimeout(ctx context.Context, t *testing.T, dbURL string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ms int
	if err := conn.QueryRow(ctx, `SELECT setting::int FROM pg_settings WHERE name = 'wal_sender_timeout'`).Scan(&ms); err != nil {
		t.Fatal(err)
	}
	if ms != 0 && ms < 60000 {
		t.Fatalf("wal_sender_timeout is %d ms on the test server; this test needs the default 60 s (or more) to prove anything", ms)
	}
}

// waitCheckpoint waits until pgrealtime has checkpointed slot as delivered up
// to pos.
func waitCheckpoint(ctx context.Context, t *testing.T, dbURL, slot, pos string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var delivered *string
		err := conn.QueryRow(ctx, `SELECT delivered FROM pgrealtime.checkpoint WHERE slot = $1`, slot).Scan(&delivered)
		if err == nil && delivered != nil && *delivered == pos {
			return
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("checkpoint of slot %s never reached %s", slot, pos)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitNotify sends a NOTIFY custom event until c receives it (a NOTIFY sent
// before the listener is back is lost: custom events are live only).
func waitNotify(ctx context.Context, t *testing.T, c *wsClient, dbURL string) {
	t.Helper()
	if r, _ := c.subscribe(ctx, "n", []string{"chat.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("subscribe chat.*: %v", r)
	}
	// A read with a deadline would close the WebSocket: one reader instead.
	frames := make(chan msg)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			m, err := c.read(rctx)
			if err != nil {
				return
			}
			select {
			case frames <- m:
			case <-rctx.Done():
				return
			}
		}
	}()
	for {
		execSQL(ctx, t, dbURL, `SELECT pg_notify('pgrealtime', '{"collection":"chat","event":"ping","record_id":"1"}')`)
		select {
		case m := <-frames:
			if m.str("type") == "custom_event" {
				return
			}
			t.Fatalf("waiting for the custom event: got %v", m)
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatal("a NOTIFY sent after the dead path never arrived: the NOTIFY listener did not reconnect")
		}
	}
}

// TestSlotHeldByAnotherProcessIsLeftAlone: a slot held by another live
// process is never taken. Both another pgrealtime on the same slot and a
// pg_recvlogical keep their connection; the newcomer stays not ready, says
// who holds the slot, and streams once the holder lets go.
func TestSlotHeldByAnotherProcessIsLeftAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newServeSetup(t, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)

	// Another pgrealtime streaming from the slot.
	first := s.start(ctx, t)
	c := dialWS(ctx, t, first.addr, adminToken(t))
	if r, _ := c.subscribe(ctx, "1", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("subscribe: %v", r)
	}
	holder := slotHolder(ctx, t, s.url, s.slot)
	second := s.startUnready(ctx, t)
	waitRefused(ctx, t, second, "is in use by another process", s.url, s.slot, holder)
	execSQL(ctx, t, s.url, `INSERT INTO posts (title) VALUES ('still streaming')`)
	if ev := c.nextEvent(ctx); recordTitle(ev) != "still streaming" {
		t.Fatalf("event %v", ev)
	}
	// Once the first lets go, the second takes over.
	first.signal(syscall.SIGTERM)
	if code := first.wait(10 * time.Second); code != 0 {
		t.Fatalf("first exit %d", code)
	}
	second.waitHTTP(ctx, "http://"+second.addr+"/readyz", 200)
	second.signal(syscall.SIGTERM)
	if code := second.wait(10 * time.Second); code != 0 {
		t.Fatalf("second exit %d", code)
	}

	// pg_recvlogical streaming from the slot.
	recv := exec.CommandContext(ctx, pgRecvlogical(t), "-d", s.url, "--slot", s.slot,
		"--start", "--no-loop", "--fsync-interval=0", "-o", "proto_version=1", "-o", "publication_names=pgrealtime", "-f", "-")
	recv.Env = append(os.Environ(), "PGAPPNAME=other-consumer")
	var recvErr lockedBuffer
	recv.Stderr = &recvErr
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	recvDone := make(chan struct{})
	var recvExit error
	go func() { recvExit = recv.Wait(); close(recvDone) }()
	t.Cleanup(func() {
		_ = recv.Process.Kill()
		<-recvDone
	})
	for holder = 0; holder == 0; holder = slotHolder(ctx, t, s.url, s.slot) {
		select {
		case <-recvDone:
			t.Fatalf("pg_recvlogical exited: %v: %s", recvExit, recvErr.String())
		case <-ctx.Done():
			t.Fatal("pg_recvlogical never took the slot")
		case <-time.After(50 * time.Millisecond):
		}
	}
	third := s.startUnready(ctx, t)
	waitRefused(ctx, t, third, `application_name \"other-consumer\"`, s.url, s.slot, holder)
	select {
	case <-recvDone:
		t.Fatalf("pg_recvlogical was ended (%v): %s", recvExit, recvErr.String())
	default:
	}
	third.signal(syscall.SIGTERM)
	if code := third.wait(10 * time.Second); code != 0 {
		t.Fatalf("third exit %d", code)
	}
}

// startUnready starts serve without waiting for it to be ready.
func (s serveSetup) startUnready(ctx context.Context, t *testing.T) *server {
	t.Helper()
	addr := freeAddr(t)
	p := startProc(t, []string{"DATABASE_URL=" + s.url, "PGREALTIME_JWT_SECRET=" + testSecret},
		"serve", "--listen", addr, "--slot", s.slot, "--publication", s.pub, "--log-level", "debug")
	p.waitHTTP(ctx, "http://"+addr+"/healthz", 200)
	return &server{proc: p, addr: addr}
}

// waitReason waits until /readyz answers 503 with a reason containing want.
func (s *server) waitReason(ctx context.Context, want string) {
	s.t.Helper()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
			if resp.StatusCode == 503 && strings.Contains(string(body), want) {
				return
			}
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("/readyz never answered 503 with %q (last: %s)", want, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitRefused waits until srv has logged want (its refusal to take the
// slot), failing at once if the slot's holder changes from holder; then
// checks that /readyz says why srv is not ready.
func waitRefused(ctx context.Context, t *testing.T, srv *server, want, dbURL, slot string, holder int) {
	t.Helper()
	for !strings.Contains(srv.stderr.String(), want) {
		if got := slotHolder(ctx, t, dbURL, slot); got != holder {
			t.Fatalf("slot holder changed from pid %d to %d: a live holder was ended or its slot taken", holder, got)
		}
		select {
		case <-srv.exited:
			t.Fatalf("pgrealtime exited before logging %q", want)
		case <-ctx.Done():
			t.Fatalf("pgrealtime never logged %q", want)
		case <-time.After(50 * time.Millisecond):
		}
	}
	srv.waitReason(ctx, "in use by another process")
	if got := slotHolder(ctx, t, dbURL, slot); got != holder {
		t.Fatalf("slot holder changed from pid %d to %d", holder, got)
	}
}

// slotHolder is the pid of the process streaming from slot (0: none).
func slotHolder(ctx context.Context, t *testing.T, dbURL, slot string) int {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pid *int
	if err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if pid == nil {
		return 0
	}
	return *pid
}

// pgRecvlogical finds pg_recvlogical beside the server binaries the tests
// use (following a symlinked initdb to its real directory).
func pgRecvlogical(t *testing.T) string {
	t.Helper()
	var dirs []string
	if dir, err := pgcluster.FindBinDir(); err == nil {
		dirs = append(dirs, dir)
		if real, err := filepath.EvalSymlinks(filepath.Join(dir, "initdb")); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	for _, dir := range dirs {
		if p := filepath.Join(dir, "pg_recvlogical"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("pg_recvlogical"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("pg_recvlogical not found in %v nor on PATH", dirs)
	}
	t.Skipf("pg_recvlogical not found in %v nor on PATH", dirs)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
