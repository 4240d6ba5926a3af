package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

//go:embed dev-rules.yaml
var devRules []byte

// findBinDir is pgcluster.FindBinDir; a test replaces it to play a machine
// without PostgreSQL.
var findBinDir = pgcluster.FindBinDir

// devInsertExample is the SQL the dev banner suggests; it must work on
// sql/demo.sql's schema and be readable under dev-rules.yaml.
const devInsertExample = `INSERT INTO posts (title, body) VALUES ('hello', 'from psql');`

// runDev starts a throwaway Postgres, loads the demo schema and serves it
// with dev-friendly defaults until ctx ends; then it stops the cluster.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(cmdDev, "dev", args, getenv, stdout)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	dlog := log.With().Str("component", "dev").Logger()

	if cfg.DataDir != "" {
		if err := checkEmptyDir(cfg.DataDir); err != nil {
			return configErr(cfg.Source("data-dir"), "%v", err)
		}
	}
	if cfg.JWTSecret == "" {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		cfg.JWTSecret = hex.EncodeToString(b)
	}
	if _, err := findBinDir(); err != nil {
		return fmt.Errorf("dev needs the PostgreSQL server binaries (initdb, pg_ctl): install them with `apt-get install -y postgresql` (Debian/Ubuntu, as root) and run again")
	}

	dlog.Info().Msg("starting a throwaway Postgres (wal_level=logical)")
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	cluster, err := pgcluster.Start(startCtx, pgcluster.Options{Dir: cfg.DataDir})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // Ctrl-C while starting
		}
		return fmt.Errorf("start postgres: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cluster.Stop(sctx, "fast"); err != nil && pgRunning(cluster.Port) {
			dlog.Warn().Err(err).Msg("stopping postgres")
		}
		_ = cluster.Close() // removes the directory when it is temporary
		dlog.Info().Msg("postgres stopped")
	}()
	cfg.DatabaseURL = cluster.URL("postgres")
	dlog.Info().Int("port", cluster.Port).Str("dir", cluster.Dir).Msg("postgres is up; loading sql/setup.sql and sql/demo.sql")

	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = loadDemo(lctx, cfg.DatabaseURL)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("load demo schema: %w", err)
	}

	exp := time.Now().Add(24 * time.Hour)
	adminToken, err := signToken(cfg.JWTSecret, mintClaims(cfg, "admin", cfg.AdminRole, exp))
	if err != nil {
		return err
	}
	userToken, err := signToken(cfg.JWTSecret, mintClaims(cfg, "ann", "user", exp))
	if err != nil {
		return err
	}

	return serve(ctx, cfg, log, serveOptions{
		defaultRules:     devRules,
		defaultRulesName: "built-in dev rules (cmd/pgrealtime/dev-rules.yaml)",
		onListening: func(addr net.Addr) {
			printDevBanner(stdout, cfg, dialAddr(addr.String()), cluster.URL("postgres"), adminToken, userToken)
		},
	})
}

func printDevBanner(w io.Writer, cfg *Config, addr, dbURL, adminToken, userToken string) {
	host := addr
	if h, p, err := net.SplitHostPort(addr); err == nil && (h == "127.0.0.1" || h == "::1") {
		host = net.JoinHostPort("localhost", p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\npgrealtime dev is running. Press Ctrl-C to stop (the throwaway database goes with it).\n\n")
	fmt.Fprintf(&b, "  inspector:   http://%s/   (paste the admin token, subscribe to posts.*)\n", host)
	fmt.Fprintf(&b, "  websocket:   ws://%s/realtime?access_token=<token>\n", host)
	fmt.Fprintf(&b, "  psql:        psql '%s'\n", dbURL)
	fmt.Fprintf(&b, "  try:         %s\n\n", devInsertExample)
	fmt.Fprintf(&b, "  admin token (role %s, may subscribe to *):\n    %s\n", cfg.AdminRole, adminToken)
	fmt.Fprintf(&b, "  user token (sub ann, role user; reads posts, comments and ann's messages):\n    %s\n", userToken)
	fmt.Fprintf(&b, "  jwt secret:  %s\n\n", cfg.JWTSecret)
	fmt.Fprintf(&b, "  one-liner:   psql '%s' -c \"%s\"\n\n", dbURL, devInsertExample)
	io.WriteString(w, b.String())
}

// checkEmptyDir accepts a missing or empty directory.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read %s: %v", dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty: give an empty or new directory (dev creates a fresh cluster each run)", dir)
	}
	return nil
}

// pgRunning reports whether something accepts connections on port.
func pgRunning(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
