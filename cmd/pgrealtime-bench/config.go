package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// config holds the sizes of one run. The full run is what docs/benchmarks.md
// reports; --quick only proves that every measurement works.
type config struct {
	Quick bool

	CatchupRows int // rows committed while pgrealtime is stopped
	CatchupTx   int // rows per transaction

	LatencyRate     int   // rows/s for the 1 and 10 subscriber cases
	LatencySubs     []int // subscriber counts at LatencyRate
	LatencyManySubs int   // subscribers at LatencyManyRate
	LatencyManyRate int
	LatencyTime     time.Duration

	FanoutSubs  int
	FanoutRates []int // events/s, stepped up until p99 > FanoutP99
	FanoutStep  time.Duration
	FanoutP99   float64 // ms

	IdleConns []int // cumulative idle connection counts; the last ones in a second process
	IdleWait  time.Duration

	Writers     int
	WriteTime   time.Duration
	WriteRounds int

	Binary   string // pgrealtime binary; built when empty
	Markdown string // where to write the report ("" = stdout only)
	Chart    string // where to write the chart ("" = none)
	KeepWork bool
	Only     map[string]bool // measurements to run; empty = all
	// ServerArgs are appended to every pgrealtime command line (for
	// experiments; the published numbers use pgrealtime's defaults).
	ServerArgs []string
	Command    string // the command line, for the report
}

func defaultConfig(quick bool) config {
	if quick {
		return config{
			Quick: true, CatchupRows: 2000, CatchupTx: 1000,
			LatencyRate: 1000, LatencySubs: []int{1, 10}, LatencyManySubs: 100, LatencyManyRate: 10, LatencyTime: 2 * time.Second,
			FanoutSubs: 100, FanoutRates: []int{10, 20}, FanoutStep: 2 * time.Second, FanoutP99: 100,
			IdleConns: []int{100, 200}, IdleWait: time.Second,
			Writers: 8, WriteTime: 3 * time.Second, WriteRounds: 1,
		}
	}
	return config{
		CatchupRows: 200000, CatchupTx: 1000,
		LatencyRate: 1000, LatencySubs: []int{1, 10}, LatencyManySubs: 1000, LatencyManyRate: 10, LatencyTime: 10 * time.Second,
		FanoutSubs: 10000, FanoutRates: []int{10, 20, 40, 80, 160}, FanoutStep: 5 * time.Second, FanoutP99: 100,
		IdleConns: []int{10000, 19000}, IdleWait: 5 * time.Second,
		Writers: 8, WriteTime: 6 * time.Second, WriteRounds: 3,
	}
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("pgrealtime-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "tiny sizes (under 2 minutes): proves every measurement works, numbers mean nothing")
	bin := fs.String("pgrealtime", "", "pgrealtime binary to measure (default: go build ./cmd/pgrealtime into a temp dir)")
	md := fs.String("markdown", "", "also write the report (markdown) to this file")
	chart := fs.String("chart", "", "write the chart to this file (.png or .svg)")
	rows := fs.Int("rows", 0, "catch-up rows (default 200000, quick 2000)")
	keep := fs.Bool("keep", false, "keep the work directory (server logs)")
	serverArgs := fs.String("server-args", "", "extra pgrealtime flags for every server start, space-separated (experiments only)")
	idleWait := fs.Duration("idle-wait", 0, "memory: how long the idle connections sit before RSS is read (default 5s, quick 1s)")
	only := fs.String("only", "", "comma list of measurements to run (catchup,latency,fanout,memory,writes,cluster); default all")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pgrealtime-bench [flags]\n       pgrealtime-bench clients --url ws://… --n N (client process, started by the benchmark)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg := defaultConfig(*quick)
	if *rows > 0 {
		cfg.CatchupRows = *rows
	}
	if *idleWait > 0 {
		cfg.IdleWait = *idleWait
	}
	if *chart != "" && !strings.HasSuffix(*chart, ".png") && !strings.HasSuffix(*chart, ".svg") {
		return config{}, fmt.Errorf("%w: --chart must end in .png or .svg", errUsage)
	}
	cfg.Binary, cfg.Markdown, cfg.Chart, cfg.KeepWork = *bin, *md, *chart, *keep
	cfg.ServerArgs = strings.Fields(*serverArgs)
	if *only != "" {
		cfg.Only = map[string]bool{}
		for _, m := range strings.Split(*only, ",") {
			switch m = strings.TrimSpace(m); m {
			case "catchup", "latency", "fanout", "memory", "writes", "cluster":
				cfg.Only[m] = true
			default:
				return config{}, fmt.Errorf("%w: --only: unknown measurement %q (catchup, latency, fanout, memory, writes, cluster)", errUsage, m)
			}
		}
	}
	cfg.Command = "pgrealtime-bench " + strings.Join(os.Args[1:], " ")
	return cfg, nil
}

// runs reports whether measurement m is part of this run.
func (c config) runs(m string) bool { return len(c.Only) == 0 || c.Only[m] }
