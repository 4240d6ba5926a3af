package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// results is everything one run measured. A measurement that failed keeps
// its error text, shown in the report instead of numbers.
type results struct {
	Machine   string
	PGVersion string
	Date      time.Time
	Command   string
	Quick     bool
	Config    config
	Elapsed   time.Duration

	Catchup    *catchupResult
	CatchupErr string
	Latency    []latencyResult
	LatencyErr string
	Fanout     *fanoutResult
	FanoutErr  string
	Memory     *memoryResult
	MemoryErr  string
	Writes     *writesResult
	WritesErr  string
	Cluster    *clusterResult
	ClusterErr string

	Load []sectionLoad
}

func (r *results) errors() []string {
	var out []string
	for _, e := range []struct{ name, err string }{
		{"catch-up", r.CatchupErr}, {"latency", r.LatencyErr}, {"fan-out", r.FanoutErr},
		{"memory", r.MemoryErr}, {"write overhead", r.WritesErr}, {"cluster", r.ClusterErr},
	} {
		if e.err != "" {
			out = append(out, e.name+": "+e.err)
		}
	}
	if r.Cluster != nil {
		out = append(out, r.Cluster.errors()...)
	}
	return out
}

// analysisMarker separates the generated report from the hand-written
// analysis below it, which a new run of the benchmark keeps.
const analysisMarker = "<!-- everything below this line is written by hand and kept when the benchmark rewrites the file -->"

// thousands formats n with a space every three digits.
func thousands(n float64) string {
	s := strconv.FormatInt(int64(math.Round(n)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func ms(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

// fanoutTarget is the fan-out target in deliveries per second (at p99 ≤
// FanoutP99), printed and checked.
const fanoutTarget = 100000

// elsewhere are figures the report shows for comparison that this
// benchmark did not measure, with their source.
const elsewhere = "Measured elsewhere, not in this run: Centrifugo, as reported in pgrealtime's issue 6 (measured there on this machine with the same kind of client tool, not by this benchmark): fan-out to one channel saturates at 50 000–70 000 deliveries/s with p99 336 ms; about 46 KB of memory per idle connection."

// verdict says whether a target was met; a quick run checks none (its
// sizes are too small for any target to mean something).
func (r *results) verdict(ok bool) string {
	switch {
	case r.Quick:
		return "not checked (--quick)"
	case ok:
		return "**met**"
	}
	return "**missed**"
}

func failed(err string) string {
	if err == "" {
		return "not run (--only)"
	}
	return "FAILED: " + mdEscape(err)
}

// mdEscape keeps text inside one table cell.
func mdEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ")
}

// markdown renders the report; when the target file already holds a
// hand-written analysis below analysisMarker, it is kept.
func (r *results) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	c := r.Config
	w("# pgrealtime benchmarks\n\n")
	if r.Quick {
		w("> **Quick mode**: tiny sizes that only prove every measurement runs. These numbers mean nothing.\n\n")
	}
	w("- Date: %s\n", r.Date.Format("2006-01-02 15:04 MST"))
	w("- Machine: %s\n", r.Machine)
	w("- PostgreSQL %s: a throwaway cluster started by the benchmark (wal_level=logical, synchronous_commit=on as by default, fsync=off: the disk is not what is measured), on the same machine\n", r.PGVersion)
	w("- Command: `%s` (what `make bench` runs after building both binaries), %s in all\n", r.Command, r.Elapsed.Round(time.Second))
	if len(c.ServerArgs) > 0 {
		w("- **Not pgrealtime's defaults**: every server ran with `%s`\n", strings.Join(c.ServerArgs, " "))
	}
	w("- Every process (Postgres, pgrealtime, the client processes, the writers) shares the same cores; all traffic is on 127.0.0.1.\n\n")
	w("![benchmark chart](benchmarks.png)\n\n")

	w("## Summary\n\n")
	w("| # | measurement | pgrealtime | reference, same run | target | result |\n|---|---|---|---|---|---|\n")
	// 1
	if cu := r.Catchup; r.CatchupErr == "" && cu != nil && len(cu.Runs) > 0 {
		var drains []string
		for _, d := range cu.Recv {
			drains = append(drains, fmt.Sprintf("%.2f", d.Seconds))
		}
		ref := fmt.Sprintf("pg_recvlogical: %s rows/s (mean of %s s)", thousands(cu.RecvRate), strings.Join(drains, " and "))
		for i, run := range cu.Runs {
			label, what := "1", fmt.Sprintf("catch-up: %s rows in %s-row transactions committed while pgrealtime was stopped, %s", thousands(float64(cu.Rows)), thousands(float64(cu.TxRows)), run.Label)
			if i > 0 {
				label, what = "1b", "catch-up, same again with "+run.Label+" (`"+strings.Join(run.Flags, " ")+"`)"
			}
			if run.SubscriberErr == "" {
				w("| %s | %s | %s rows/s (%.2f s from process start to the last row at the subscriber) | %s | ≥ 0.8× pg_recvlogical | %.2f× %s |\n",
					label, what, thousands(run.Rate), run.Seconds, ref, run.Ratio, r.verdict(run.Ratio >= 0.8))
			} else {
				w("| %s | %s | %s rows/s decoded and published (%.2f s), but the subscriber did not get them all: %s | %s | ≥ 0.8× pg_recvlogical, to the subscriber | %.2f× without the subscriber; %s |\n",
					label, what, thousands(run.Rate), run.Seconds, mdEscape(run.SubscriberErr), ref, run.Ratio, r.verdict(false))
			}
		}
	} else {
		w("| 1 | catch-up | %s | | ≥ 0.8× pg_recvlogical | |\n| 1b | catch-up | — | | | |\n", failed(r.CatchupErr))
	}
	// 2
	labels := []string{"2a", "2b", "2c"}
	for i := 0; i < 3; i++ {
		if r.LatencyErr != "" && i >= len(r.Latency) {
			w("| %s | live latency | %s | | | |\n", labels[i], failed(r.LatencyErr))
			continue
		}
		if i >= len(r.Latency) {
			continue
		}
		l := r.Latency[i]
		target, res := "—", "(no target)"
		if l.Rate >= 1000 {
			target = "p50 ≤ 2 ms, p99 ≤ 15 ms"
			res = r.verdict(l.Lat.P50 <= 2 && l.Lat.P99 <= 15)
		}
		w("| %s | live latency: %s rows/s (single-row transactions) to %s subscriber(s), commit → client | p50 %s · p99 %s · max %s | | %s | %s |\n",
			labels[i], thousands(float64(l.Rate)), thousands(float64(l.Subs)), ms(l.Lat.P50), ms(l.Lat.P99), ms(l.Lat.Max), target, res)
	}
	// 3
	if f := r.Fanout; f != nil && len(f.Steps) > 0 {
		s := f.Steps[0]
		w("| 3a | fan-out: one topic, %s subscribers, %d events/s | %s deliveries/s · p50 %s · p99 %s · CPU %.1f s server, %.1f s clients over %.0f s | | ≥ %s deliveries/s at p99 ≤ %.0f ms | %s |\n",
			thousands(float64(f.Subs)), s.Rate, thousands(s.PerSec), ms(s.Lat.P50), ms(s.Lat.P99), s.ServerCPU, s.ClientCPU, s.Seconds,
			thousands(fanoutTarget), c.FanoutP99, r.verdict(s.PerSec >= fanoutTarget && s.Lat.P99 <= c.FanoutP99))
		best := -1
		for i, s := range f.Steps {
			if s.Lat.P99 <= c.FanoutP99 && s.Closed == 0 && (best < 0 || s.Rate > f.Steps[best].Rate) {
				best = i
			}
		}
		if best >= 0 {
			s := f.Steps[best]
			w("| 3b | fan-out: highest step with p99 ≤ %.0f ms | %d events/s: %s deliveries/s · p50 %s · p99 %s | | | stopped: %s |\n",
				c.FanoutP99, s.Rate, thousands(s.PerSec), ms(s.Lat.P50), ms(s.Lat.P99), f.StopReason)
		} else {
			w("| 3b | fan-out: highest step with p99 ≤ %.0f ms | none | | | stopped: %s |\n", c.FanoutP99, f.StopReason)
		}
		if len(f.Floor) > 0 {
			fl := f.Floor[0]
			w("| 3c | fan-out floor of this machine: a bare WebSocket server writing a prebuilt frame with one write(2) per subscriber, %d events/s to %s | %s deliveries/s · p50 %s · p99 %s · CPU %.1f s server, %.1f s clients | pgrealtime at the same step: p99 %s, %.1f s server CPU | | %s |\n",
				fl.Rate, thousands(float64(f.Subs)), thousands(fl.PerSec), ms(fl.Lat.P50), ms(fl.Lat.P99), fl.ServerCPU, fl.ClientCPU, ms(s.Lat.P99), s.ServerCPU,
				fmt.Sprintf("pgrealtime's server CPU %.1f× the floor's", ratio(s.ServerCPU, fl.ServerCPU)))
		} else if f.FloorErr != "" {
			w("| 3c | fan-out floor | %s | | | |\n", failed(f.FloorErr))
		}
	} else {
		w("| 3a | fan-out | %s | | | |\n| 3b | fan-out step-up | — | | | |\n", failed(r.FanoutErr))
	}
	// 4
	labels = []string{"4a", "4b"}
	for i := 0; i < 2; i++ {
		if m := r.Memory; m != nil && i < len(m.Points) {
			p := m.Points[i]
			heap := ""
			if m.Metrics {
				heap = fmt.Sprintf(" (Go heap in use %.1f KiB + goroutine stacks %.1f KiB)", p.HeapKB, p.StackKB)
			}
			w("| %s | memory: RSS growth per idle subscribed connection at %s connections | %.1f KiB%s | | ≤ 12 KB | %s |\n",
				labels[i], thousands(float64(p.Conns)), p.PerConnKB, heap, r.verdict(p.PerConnKB*1024 <= 12000))
		} else {
			w("| %s | memory | %s | | ≤ 12 KB | |\n", labels[i], failed(r.MemoryErr))
		}
	}
	// 5
	if wr := r.Writes; r.WritesErr == "" && wr != nil {
		ps, rs, ts := wr.setup(setupPgrealtime), wr.setup(setupRecv), wr.setup(setupTrigger)
		pr, rv, tr := ps.Ratio, rs.Ratio, ts.Ratio
		res := fmt.Sprintf("%.2f×: %s", ratio(pr, rv), r.verdict(ratio(pr, rv) >= 0.9 && ps.keptUp()))
		if !ps.keptUp() {
			res = fmt.Sprintf("%.2f×, but pgrealtime fell behind the writers (its subscriber had as little as %.0f%% of the rows 5 s after they stopped), so its ratio understates its cost: %s",
				ratio(pr, rv), 100*ps.minDelivered(), r.verdict(false))
		}
		if l := ps.maxLagMB(); ps.keptUp() && l > 1 {
			res += fmt.Sprintf("; pgrealtime was up to %.1f MB of WAL behind when the writers stopped (its subscriber had every row 5 s later), and a consumer that lags leaves the writers more CPU", l)
		}
		if l := rs.maxLagMB(); l > 1 {
			res += fmt.Sprintf("; pg_recvlogical's walsender fell behind too: up to %.1f MB", l)
		}
		if pc, rc := ps.cpuPer100k(), rs.cpuPer100k(); pc > 0 && rc > 0 {
			res += fmt.Sprintf(". CPU per 100 000 rows, all of each consumer's processes (walsender included): pgrealtime %.2f s, pg_recvlogical %.2f s (%.2f×)", pc, rc, pc/rc)
		}
		w("| 5a | write overhead: %d writers, single-row inserts, %.0f s × %d rounds per setup | writers keep %.2f× of their throughput | pg_recvlogical: %.2f× | ≥ 0.9× pg_recvlogical's | %s |\n",
			wr.Writers, wr.Seconds, wr.Rounds, pr, rv, res)
		w("| 5b | write overhead against trigger + pg_notify + LISTEN | %.2f× the trigger's | trigger: %.2f×; pg_recvlogical, Postgres's own decoding with nothing after it: %.2f× the trigger's | ≥ 2× trigger's | %s |\n",
			ratio(pr, tr), tr, ratio(rv, tr), fmt.Sprintf("%s (every logical-decoding consumer pays the walsender's decoding: the bound here is about pg_recvlogical's %.2f×)", r.verdict(ratio(pr, tr) >= 2 && ps.keptUp()), ratio(rv, tr)))
	} else {
		w("| 5a | write overhead | %s | | | |\n| 5b | write overhead against the trigger | — | | | |\n", failed(r.WritesErr))
	}
	r.clusterRows(w)
	w("\n%s\n", elsewhere)
	r.details(&b)
	md := b.String()
	if c.Markdown != "" {
		if old, err := os.ReadFile(c.Markdown); err == nil {
			if _, hand, ok := strings.Cut(string(old), analysisMarker); ok {
				return md + "\n" + analysisMarker + hand
			}
		}
	}
	return md + "\n" + analysisMarker + "\n"
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *results) details(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	if cu := r.Catchup; cu != nil && cu.RecvSeconds > 0 {
		w("\n## 1. Catch-up\n\n")
		w("%s rows (table `bench (id bigserial primary key, v int, note text)`) committed in %s-row transactions (%.1f s) while pgrealtime was stopped; pgrealtime's slot and two more (`%s`) start at the same point. ",
			thousands(float64(cu.Rows)), thousands(float64(cu.TxRows)), cu.WriteSeconds, recvSlot+"`, `"+recvSlot2)
		w("`pg_recvlogical --start -o proto_version=1 -o publication_names=… -E <WAL position before the last commit record> -f /dev/null` drained the first copy before pgrealtime's first run and the second copy after it (the rate used for the ratios is over their mean time). pgrealtime was started with one subscriber that connects as soon as the port answers and resumes (`since`) from the last position it had seen before the stop. The time runs from the process start to the subscriber's receipt of the last row; pgrealtime's own count of WAL events (`/metrics`, polled every 20 ms) gives the time at which it had decoded and published everything. The second run repeats this over a new backlog of the same size with a send queue that holds the whole backlog.\n\n")
		w("| consumer | seconds | rows/s | ratio | CPU seconds (own process) |\n|---|---|---|---|---|\n")
		for _, d := range cu.Recv {
			w("| pg_recvlogical (slot `%s`) | %.2f | %s | %.2f | %.2f |\n", d.Slot, d.Seconds, thousands(float64(cu.Rows)/d.Seconds), cu.RecvSeconds/d.Seconds, d.CPU)
		}
		for _, run := range cu.Runs {
			flags := "`" + strings.Join(run.Flags, " ") + "`"
			if run.ServerSeconds > 0 {
				w("| pgrealtime %s: every row decoded and published (the first after %.2f s: start-up, connecting, first transaction) | %.2f | %s | %.2f | |\n", flags, run.FirstSeconds, run.ServerSeconds, thousands(float64(cu.Rows)/run.ServerSeconds), float64(cu.Rows)/run.ServerSeconds/cu.RecvRate)
			}
			if run.SubscriberErr == "" {
				w("| pgrealtime %s: last row at the subscriber (%s rows received, resumed: %v) | %.2f | %s | %.2f | %.2f |\n", flags, thousands(float64(run.Received)), run.Resumed, run.Seconds, thousands(run.Rate), run.Ratio, run.ServerCPU)
			} else {
				w("| pgrealtime %s: the subscriber **did not receive every row** (%s received, resumed: %v): %s | — | — | — | %.2f |\n", flags, thousands(float64(run.Received)), run.Resumed, mdEscape(run.SubscriberErr), run.ServerCPU)
			}
		}
		if len(cu.Recv) > 0 {
			w("\npg_recvlogical said: %s.\n", cu.Recv[len(cu.Recv)-1].End)
		}
	}
	if len(r.Latency) > 0 {
		w("\n## 2. Live latency\n\n")
		w("One writer commits single-row transactions on a fixed schedule; the subscribers (a separate process) take the receive time and subtract the event's `timestamp` (the commit time from Postgres's clock; same machine, same clock). %.0f s per case after a 1 s warm-up; every delivery counts.\n\n", r.Config.LatencyTime.Seconds())
		w("| rows/s | subscribers | rows written | deliveries (expected) | p50 | p99 | max |\n|---|---|---|---|---|---|---|\n")
		for _, l := range r.Latency {
			w("| %s | %s | %s | %s (%s) | %s | %s | %s |\n", thousands(float64(l.Rate)), thousands(float64(l.Subs)), thousands(float64(l.Written)),
				thousands(float64(l.Lat.Count)), thousands(float64(l.Expected)), ms(l.Lat.P50), ms(l.Lat.P99), ms(l.Lat.Max))
		}
	}
	if f := r.Fanout; f != nil && len(f.Steps) > 0 {
		w("\n## 3. Fan-out\n\n")
		w("%s subscribers of `bench.*` in one client process (connected in %.1f s); one writer commits single-row transactions at each rate for %.0f s; when the first rate already misses, the rate steps down instead. Deliveries/s counts what arrived within the window; latency covers every delivery including those drained after it. CPU is user+system seconds over the step from /proc/<pid>/stat. Stopped: %s.\n\n",
			thousands(float64(f.Subs)), f.ConnectSeconds, r.Config.FanoutStep.Seconds(), f.StopReason)
		stepsTable(w, f.Steps)
		if len(f.Floor) > 0 {
			w("\nThe floor, same client process and steps: `pgrealtime-bench floor`, a bare WebSocket server (handshake by hand) that writes each event's prebuilt frame to every subscriber with one `write(2)` each from GOMAXPROCS goroutines — no WebSocket library, queue, rules or Postgres; the event's timestamp is taken just before the writes. Stopped: %s.\n\n", f.FloorStop)
			stepsTable(w, f.Floor)
		}
	}
	if m := r.Memory; m != nil && len(m.Points) > 0 {
		w("\n## 4. Memory per idle connection\n\n")
		w("A fresh pgrealtime (`--max-connections 25000`); baseline VmRSS after a warm-up round of 100 connections, then idle connections, each subscribed to `bench.*`, held by client processes (at most 10 000 per process), measured after %.0f s idle. Baseline RSS: %s KiB.", r.Config.IdleWait.Seconds(), thousands(float64(m.BaseRSSKB)))
		if m.Metrics {
			w(" The Go runtime's own figures come from `/metrics`.")
		}
		w("\n\n| idle connections | RSS KiB | RSS growth per connection | Go heap in use per connection | goroutine stacks per connection | goroutines per connection |\n|---|---|---|---|---|---|\n")
		for _, p := range m.Points {
			w("| %s | %s | %.1f KiB | %.1f KiB | %.1f KiB | %.1f |\n", thousands(float64(p.Conns)), thousands(float64(p.RSSKB)), p.PerConnKB, p.HeapKB, p.StackKB, p.Goroutines)
		}
	}
	if wr := r.Writes; wr != nil && len(wr.Setups) > 0 && len(wr.Setups[0].TPS) > 0 {
		w("\n## 5. Write overhead\n\n")
		w("%d writers, each on its own connection, insert single-row transactions as fast as they can for %.0f s per setup; the setups alternate, %d round(s). Before each setup every inactive slot is advanced to the end of WAL, so no consumer drains an earlier backlog. pgrealtime runs with one subscriber; the trigger setup is an `AFTER INSERT … FOR EACH ROW` trigger calling `pg_notify('bench_changes', row_to_json(NEW)::text)` with one LISTEN connection receiving.\n\n", wr.Writers, wr.Seconds, wr.Rounds)
		w("| setup | tx/s per round | mean tx/s | ratio to nothing attached | WAL not yet decoded when the writers stopped, per round | consumer received / written, 5 s after the writers stopped, per round | CPU s per 100 000 rows (mean of the rounds) |\n|---|---|---|---|---|---|---|\n")
		for _, s := range wr.Setups {
			var per []string
			for _, v := range s.TPS {
				per = append(per, thousands(v))
			}
			got, lag := "—", "—"
			if s.Name == setupRecv || s.Name == setupPgrealtime {
				var ls []string
				for _, l := range s.LagMB {
					ls = append(ls, fmt.Sprintf("%.1f MB", l))
				}
				lag = strings.Join(ls, ", ")
			}
			var gs []string
			for i, d := range s.Delivered {
				if d >= 0 {
					gs = append(gs, thousands(float64(d))+" / "+thousands(float64(s.Written[i])))
				}
			}
			if len(gs) > 0 {
				got = strings.Join(gs, ", ")
			}
			w("| %s | %s | %s | %.2f× | %s | %s | %s |\n", s.Name, strings.Join(per, ", "), thousands(s.Mean), s.Ratio, lag, got, s.cpuCell())
		}
		w("\nA consumer that falls behind makes its walsender wait, which leaves more CPU to the writers: a setup's ratio is only comparable when its consumer keeps up. CPU is user+system time from /proc/<pid>/stat, from the writers' start until the consumer had every row (or 5 s after the writers stopped), divided by the rows written; pg_recvlogical writes every change to a file (`-f`, `-s 1`, `-o messages=true`: the options pgrealtime streams with).")
		if a := wr.ServerArgs; len(a) > 0 {
			w(" pgrealtime ran with `%s` in this measurement.", strings.Join(a, " "))
		}
		w("\n")
	}
	r.clusterDetails(w)
	if len(r.Load) > 0 {
		w("\n## Machine load during each measurement\n\n")
		w("Busy cores are from /proc/stat over the measurement: every process on the machine counts, the benchmark's own (Postgres, pgrealtime, client processes, writers) and anything else running at the time. Out of %d.\n\n", nprocs())
		w("| measurement | seconds | busy cores | load average at the end (1, 5, 15 min) |\n|---|---|---|---|\n")
		for _, l := range r.Load {
			w("| %s | %.0f | %.2f | %s |\n", l.Name, l.Seconds, l.BusyCores, l.LoadAvg)
		}
	}
	if errs := r.errors(); len(errs) > 0 {
		w("\n## Failures\n\n")
		for _, e := range errs {
			w("- %s\n", e)
		}
	}
}

// stepsTable writes one fan-out table.
func stepsTable(w func(string, ...any), steps []fanoutStep) {
	w("| events/s | deliveries/s | p50 | p99 | max | server CPU s (cores), of which kernel | server CPU µs per delivery | clients CPU s (cores) | closed |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range steps {
		per := 0.0
		if s.Lat.Count > 0 {
			per = s.ServerCPU / float64(s.Lat.Count) * 1e6
		}
		w("| %d | %s | %s | %s | %s | %.1f (%.2f), %.0f%% | %.1f | %.1f (%.2f) | %d |\n", s.Rate, thousands(s.PerSec), ms(s.Lat.P50), ms(s.Lat.P99), ms(s.Lat.Max),
			s.ServerCPU, s.ServerCPU/s.Seconds, 100*ratio(s.ServerSys, s.ServerCPU), per, s.ClientCPU, s.ClientCPU/s.Seconds, s.Closed)
	}
}
