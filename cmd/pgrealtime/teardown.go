package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// runTeardown drops the replication slot and the publication(s) serve
// created. It refuses without --yes.
func runTeardown(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(cmdTeardown, "teardown", args, getenv, stdout)
	if err != nil {
		return err
	}
	if !cfg.Yes {
		return configErr("--yes", "teardown drops replication slot %q and publication %q for good; add --yes to confirm", cfg.Slot, cfg.Publication)
	}
	if err := checkDatabaseURL(cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := teardown(ctx, cfg); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	fmt.Fprintf(stdout, "dropped replication slot %q and publication %q\n", cfg.Slot, cfg.Publication)
	return nil
}
