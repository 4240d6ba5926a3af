// Command pgrealtime streams committed Postgres changes to WebSocket
// clients. See README.md for the commands and PROTOCOL for the contract.
//
// Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first SIGINT/SIGTERM cancels ctx (graceful shutdown); after that
	// the default handling is restored so a second Ctrl-C kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgrealtime: %v\n", err)
	}
	os.Exit(exitCode(err))
}

// exitCode maps run's error to the process exit code.
func exitCode(err error) int {
	var ce *ConfigError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		return 2
	}
	return 1
}

const mainUsage = `pgrealtime streams committed Postgres changes to WebSocket clients.

Usage:
  pgrealtime serve      connect to Postgres, stream the WAL, serve HTTP/WebSocket
  pgrealtime dev        start a throwaway Postgres with demo data and serve it
  pgrealtime teardown   drop the replication slot and the publication (needs --yes)
  pgrealtime version    print the version
  pgrealtime token      print an HS256 token signed with --jwt-secret (--sub, --role, --ttl)
  pgrealtime healthcheck  exit 0 when GET /healthz on --listen answers 200
  pgrealtime cluster reset  delete a cluster's Redis keys (--redis-url, --slot; needs --yes;
                            refused while one of its nodes runs)

Run "pgrealtime <command> --help" for the flags of a command. Every flag
--some-name can also be set with the environment variable PGREALTIME_SOME_NAME.
`

// run executes one command line. It is main without the process: tests call
// it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return configErr("", "missing command (serve, dev, teardown, version, token, healthcheck, cluster)")
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, rest, getenv, stdout, stderr)
	case "dev":
		err = runDev(ctx, rest, getenv, stdout, stderr)
	case "teardown":
		err = runTeardown(ctx, rest, getenv, stdout, stderr)
	case "version", "--version", "-version":
		err = runVersion(rest, stdout)
	case "healthcheck":
		err = runHealthcheck(ctx, rest, getenv, stdout, stderr)
	case "token":
		err = runToken(ctx, rest, getenv, stdout, stderr)
	case "cluster":
		err = runCluster(ctx, rest, getenv, stdout, stderr)
	case "flags-markdown": // hidden: the README flag table
		_, err = io.WriteString(stdout, flagsMarkdown())
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, mainUsage)
		return nil
	default:
		fmt.Fprint(stderr, mainUsage)
		return configErr("", "unknown command %q (serve, dev, teardown, version, token, healthcheck, cluster)", cmd)
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
