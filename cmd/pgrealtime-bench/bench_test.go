package main

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// summaryRows are the first cells of the summary table: one per measurement.
var summaryRows = []string{"| 1 | catch-up", "| 1b | catch-up", "| 2a | live latency", "| 2b | live latency", "| 2c | live latency",
	"| 3a | fan-out", "| 3b | fan-out", "| 4a | memory", "| 4b | memory", "| 5a | write overhead", "| 5b | write overhead",
	"| 6a | cluster", "| 6b | cluster", "| 6c | cluster"}

// TestQuickRun builds pgrealtime and the benchmark, runs `--quick` as a
// subprocess against its own throwaway Postgres, and checks that the report
// has every measurement and no failure, and that the chart is a PNG. It
// asserts nothing about the numbers.
func TestQuickRun(t *testing.T) {
	_ = pgtest.NewDB(t) // Postgres is installed (else skipped, or failed under CI=true)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()
	server, bench := filepath.Join(dir, "pgrealtime"), filepath.Join(dir, "pgrealtime-bench")
	for _, b := range [][2]string{{server, "../pgrealtime"}, {bench, "."}} {
		out, err := exec.CommandContext(ctx, "go", "build", "-o", b[0], b[1]).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	md, chart := filepath.Join(dir, "bench.md"), filepath.Join(dir, "bench.png")
	cmd := exec.CommandContext(ctx, bench, "--quick", "--pgrealtime", server, "--markdown", md, "--chart", chart)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	t.Logf("progress:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("pgrealtime-bench --quick: %v\nstdout:\n%s", err, stdout)
	}
	report, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if string(report) != string(stdout) {
		t.Errorf("the markdown file differs from what was printed")
	}
	checkReport(t, string(report))
	// The fan-out floor ran against the same clients (a bare server the
	// coder/websocket clients accept: handshake, frames, subscribe reply).
	if !strings.Contains(string(report), "| 3c | fan-out floor") {
		t.Errorf("report has no fan-out floor row (3c)")
	}
	f, err := os.Open(chart)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.DecodeConfig(f); err != nil {
		t.Errorf("chart is not a PNG: %v", err)
	}
}

func checkReport(t *testing.T, report string) {
	t.Helper()
	for _, row := range summaryRows {
		if !strings.Contains(report, row) {
			t.Errorf("report has no row %q", row)
		}
	}
	if strings.Contains(report, "FAILED") {
		t.Errorf("report shows a failed measurement")
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}
