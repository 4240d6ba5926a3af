// Command testdb starts a throwaway PostgreSQL cluster (wal_level=logical)
// for the browser test, prints one JSON line {"url":…,"psql":…} on stdout,
// and keeps the cluster running until its standard input is closed or it
// gets SIGINT/SIGTERM; then it stops the cluster and removes its directory.
//
// It exists so that the node test can reuse internal/pgcluster (which knows
// how to run initdb as root, pick a port, and clean up) instead of
// re-implementing it in JavaScript.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testdb:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()

	line, _ := json.Marshal(map[string]string{
		"url":  c.URL("postgres"),
		"psql": filepath.Join(c.BinDir, "psql"),
		"log":  c.LogFile,
	})
	fmt.Println(string(line))

	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-done:
	case <-sig:
	}
	return nil
}
