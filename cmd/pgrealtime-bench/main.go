// Command pgrealtime-bench measures pgrealtime against the alternatives on
// one machine in one run: catch-up throughput against pg_recvlogical, live
// commit-to-client latency, fan-out to many subscribers, memory per idle
// connection, and the write overhead pgrealtime puts on Postgres compared
// with pg_recvlogical and with a trigger + pg_notify + LISTEN setup.
//
// It starts its own throwaway Postgres (from the installed server binaries)
// and runs pgrealtime as a separate process; WebSocket clients live in
// separate processes of this same binary (`pgrealtime-bench clients …`).
// Every load is bounded in count and time and stays on 127.0.0.1.
//
//	pgrealtime-bench [--quick] [--pgrealtime bin/pgrealtime] [--markdown docs/benchmarks.md] [--chart docs/benchmarks.png]
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgrealtime-bench:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "clients" {
		return runClients(ctx, args[1:], stdin, stdout)
	}
	if len(args) > 0 && args[0] == "floor" {
		return runFloor(ctx, args[1:], stdin, stdout)
	}
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	return runBench(ctx, cfg, stdout, stderr)
}

func nprocs() int { return runtime.NumCPU() }
