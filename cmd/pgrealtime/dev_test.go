package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

// TestDevAsNewcomer runs `pgrealtime dev` the way the README says, from a
// fresh directory, and drives one event through it with what it printed.
func TestDevAsNewcomer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	addr := freeAddr(t)
	home := t.TempDir()
	p := startProc(t, []string{"HOME=" + home}, "dev", "--listen", addr)
	p.waitHTTP(ctx, "http://"+addr+"/readyz", 200)

	// The banner is printed once the listener is up.
	var banner string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		banner = p.stdout.String()
		if strings.Contains(banner, "user token") || time.Now().After(deadline) {
			break
		}
	}
	find := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(banner)
		if m == nil {
			t.Fatalf("dev output lacks %s:\n%s", re, banner)
		}
		return m[1]
	}
	_, port, _ := net.SplitHostPort(addr)
	if inspector := find(`inspector:\s+(\S+)`); inspector != "http://localhost:"+port+"/" {
		t.Errorf("inspector URL %q", inspector)
	}
	dbURL := find(`psql:\s+psql '([^']+)'`)
	insert := find(`try:\s+(.+)`)
	admin := find(`(?m)^\s+admin token[^\n]*\n\s+(\S+)`)
	find(`(?m)^\s+user token[^\n]*\n\s+(\S+)`)

	c := dialWS(ctx, t, addr, admin)
	if r, _ := c.subscribe(ctx, "1", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("subscribe posts.*: %v", r)
	}
	// Paste the printed psql line with the printed INSERT.
	psql := "psql"
	if dir, err := pgcluster.FindBinDir(); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "psql")); err == nil {
			psql = filepath.Join(dir, "psql")
		}
	}
	if out, err := exec.CommandContext(ctx, psql, dbURL, "-X", "-v", "ON_ERROR_STOP=1", "-c", insert).CombinedOutput(); err != nil {
		t.Fatalf("%s %s -c %q: %v\n%s", psql, dbURL, insert, err, out)
	}
	ev := c.nextEvent(ctx)
	if ev.str("collection") != "posts" || ev.str("action") != "create" {
		t.Fatalf("event %v", ev)
	}
	rec, _ := ev["record"].(map[string]any)
	if _, leaked := rec["internal_notes"]; leaked {
		t.Errorf("dev rules should omit internal_notes: %v", rec)
	}

	pgPort := find(`@127\.0\.0\.1:(\d+)/`)
	dirMatch := regexp.MustCompile(`dir=(\S+)`).FindStringSubmatch(p.stderr.String())

	p.signal(syscall.SIGINT)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("dev exit code %d after SIGINT, want 0", code)
	}
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+pgPort, time.Second); err == nil {
		conn.Close()
		t.Errorf("postgres still listens on %s after dev exited", pgPort)
	}
	if dirMatch == nil {
		t.Errorf("no dir= in the dev log")
	} else if _, err := os.Stat(dirMatch[1]); !os.IsNotExist(err) {
		t.Errorf("throwaway cluster directory %s still exists (%v)", dirMatch[1], err)
	}
}
