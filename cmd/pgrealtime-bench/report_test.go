package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleResults() *results {
	cfg := defaultConfig(false)
	return &results{
		Machine: "2 CPUs", PGVersion: "15", Date: time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC), Command: "pgrealtime-bench", Config: cfg,
		Catchup: &catchupResult{Rows: 200000, TxRows: 1000, RecvSeconds: 4, RecvRate: 50000, Recv: []recvDrain{{Slot: "a", Seconds: 3}, {Slot: "b", Seconds: 5}}, Runs: []catchupRun{
			{Label: "default send queue", Flags: []string{"--history-size", "220000"}, Seconds: 4, Rate: 50000, ServerSeconds: 4, Ratio: 1, Received: 10, SubscriberErr: "after 10 of 200000 rows: 4008"},
			{Label: "send queue holding the backlog", Flags: []string{"--send-queue", "220000"}, Seconds: 5, Rate: 40000, ServerSeconds: 4, Received: 200000, Resumed: true, Ratio: 0.8},
		}},
		Latency: []latencyResult{
			{Subs: 1, Rate: 1000, Lat: Latency{Count: 10, P50: 1, P99: 3, Max: 5}},
			{Subs: 10, Rate: 1000, Lat: Latency{Count: 10, P50: 1.5, P99: 20, Max: 30}},
			{Subs: 1000, Rate: 10, Lat: Latency{Count: 10, P50: 10, P99: 40, Max: 50}},
		},
		Fanout: &fanoutResult{Subs: 10000, Steps: []fanoutStep{
			{Rate: 10, Seconds: 5, PerSec: 100000, Lat: Latency{P50: 20, P99: 60}},
			{Rate: 20, Seconds: 5, PerSec: 150000, Lat: Latency{P50: 90, P99: 300}},
		}, StopReason: "p99 300 ms > 100 ms at 20 events/s"},
		Memory: &memoryResult{BaseRSSKB: 20000, Points: []memoryPoint{{Conns: 10000, RSSKB: 120000, PerConnKB: 10}, {Conns: 19000, RSSKB: 230000, PerConnKB: 11}}},
		Writes: &writesResult{Writers: 8, Seconds: 8, Rounds: 2, Setups: []*writeSetup{
			{Name: setupNone, TPS: []float64{10000, 10000}, Mean: 10000, Ratio: 1, Delivered: []int64{-1, -1}, Written: []int64{1, 1}},
			{Name: setupRecv, TPS: []float64{6000, 6000}, Mean: 6000, Ratio: 0.6, Delivered: []int64{-1, -1}, Written: []int64{1, 1}},
			{Name: setupPgrealtime, TPS: []float64{5800, 5800}, Mean: 5800, Ratio: 0.58, Delivered: []int64{1, 1}, Written: []int64{1, 1}},
			{Name: setupTrigger, TPS: []float64{3000, 3000}, Mean: 3000, Ratio: 0.3, Delivered: []int64{1, 1}, Written: []int64{1, 1}},
		}},
	}
}

// TestReport renders a report from fixed numbers: every summary row, the
// verdicts, the chart, and the hand-written analysis kept across rewrites.
func TestReport(t *testing.T) {
	r := sampleResults()
	dir := t.TempDir()
	r.Config.Markdown = filepath.Join(dir, "b.md")
	md := r.markdown()
	checkReport(t, md)
	for _, want := range []string{"0.80× **met**", "| 2b |", "**missed**", "| 5a | write overhead", "0.97×: **met**", "| 5b |", "1.93× the trigger", "pg_recvlogical's 2.00×", "10.0 KiB"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	hand := "\n## Analysis\n\nwritten by hand\n"
	if err := os.WriteFile(r.Config.Markdown, []byte(md+hand), 0o644); err != nil {
		t.Fatal(err)
	}
	if again := r.markdown(); !strings.HasSuffix(again, analysisMarker+"\n"+hand) || strings.Count(again, analysisMarker) != 1 {
		t.Errorf("hand-written analysis not kept:\n%s", again)
	}
	for _, name := range []string{"b.png", "b.svg"} {
		if err := r.chart(filepath.Join(dir, name)); err != nil {
			t.Fatalf("chart %s: %v", name, err)
		}
	}
	r.Writes, r.WritesErr = nil, "boom | bang"
	if md := r.markdown(); !strings.Contains(md, "| 5a | write overhead | FAILED: boom \\| bang") {
		t.Errorf("failure not shown:\n%s", md)
	}
}

func TestJSONField(t *testing.T) {
	msg := []byte(`{"type":"record_event","collection":"bench","action":"create","record_id":"42","record":{"id":42,"v":1,"note":"x"},"timestamp":"2026-11-25T20:00:00.123456Z","position":"0/16B3748:2"}`)
	for key, want := range map[string]string{"type": "record_event", "record_id": "42", "position": "0/16B3748:2", "missing": ""} {
		if got := string(jsonField(msg, key)); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	at := time.Date(2026, 11, 25, 20, 0, 0, 125456000, time.UTC)
	if d, ok := eventLatency(msg, at); !ok || d != 2*time.Millisecond {
		t.Errorf("latency = %v, %v; want 2ms", d, ok)
	}
}

// summaryLines returns the rows of the report's summary table.
func summaryLines(md string) []string {
	var rows []string
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| 1") || strings.HasPrefix(line, "| 2") || strings.HasPrefix(line, "| 3") ||
			strings.HasPrefix(line, "| 4") || strings.HasPrefix(line, "| 5") {
			rows = append(rows, line)
		}
	}
	return rows
}

// The report checks exactly the targets it prints, shows under "reference,
// same run" only what this run measured, and under --quick claims nothing.
func TestReportIsHonest(t *testing.T) {
	r := sampleResults()
	md := r.markdown()
	for _, row := range summaryLines(md) {
		if strings.Contains(row, "Centrifugo") {
			t.Errorf("a summary row shows Centrifugo, which this run did not measure, under %q:\n%s", "reference, same run", row)
		}
	}
	if !strings.Contains(md, "Measured elsewhere, not in this run: Centrifugo, as reported in pgrealtime's issue 6") {
		t.Errorf("the report does not say where the Centrifugo figures come from")
	}

	// The fan-out row prints its target and checks that, not less.
	for _, c := range []struct {
		perSec, p99 float64
		want        string
	}{
		{99000, 60, "**missed**"}, {100000, 60, "**met**"}, {150000, 100, "**met**"}, {150000, 101, "**missed**"},
	} {
		r.Fanout.Steps[0].PerSec, r.Fanout.Steps[0].Lat.P99 = c.perSec, c.p99
		var row string
		for _, l := range summaryLines(r.markdown()) {
			if strings.HasPrefix(l, "| 3a |") {
				row = l
			}
		}
		if !strings.Contains(row, "| ≥ 100 000 deliveries/s at p99 ≤ 100 ms | "+c.want+" |") {
			t.Errorf("%.0f deliveries/s at p99 %.0f ms: want target ≥ 100 000 deliveries/s at p99 ≤ 100 ms %s, got\n%s", c.perSec, c.p99, c.want, row)
		}
	}

	// --quick checks no target: no row says met or missed.
	r = sampleResults()
	r.Quick, r.Config.Quick = true, true
	md = r.markdown()
	checkReport(t, md)
	if strings.Contains(md, "**met**") || strings.Contains(md, "**missed**") {
		t.Errorf("a --quick report claims a verdict:\n%s", md)
	}
	if n := strings.Count(md, "not checked (--quick)"); n < 8 {
		t.Errorf("%d rows say %q, want every row with a target (1, 1b, 2a, 3a, 4a, 4b, 5a, 5b)", n, "not checked (--quick)")
	}
}
