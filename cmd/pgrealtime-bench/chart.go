package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

var (
	colRef   = color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff} // references (pg_recvlogical, trigger)
	colMain  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // pgrealtime
	colSecnd = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colGoal  = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// chart draws six panels (catch-up, latency, fan-out latency, fan-out CPU,
// memory, write overhead) into one PNG or SVG.
func (r *results) chart(path string) error {
	panels := [][]*plot.Plot{
		{r.catchupPlot(), r.latencyPlot(), r.fanoutPlot()},
		{r.fanoutCPUPlot(), r.memoryPlot(), r.writesPlot()},
	}
	const w, h = 18 * vg.Inch, 10 * vg.Inch
	tiles := draw.Tiles{Rows: 2, Cols: 3, PadX: vg.Inch / 3, PadY: vg.Inch / 3, PadTop: vg.Inch / 4, PadBottom: vg.Inch / 6, PadLeft: vg.Inch / 6, PadRight: vg.Inch / 4}
	var canvas vg.CanvasWriterTo
	if strings.HasSuffix(path, ".svg") {
		canvas = vgsvg.New(w, h)
	} else {
		canvas = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96), vgimg.UseBackgroundColor(color.White))}
	}
	dc := draw.New(canvas)
	cs := plot.Align(panels, tiles, dc)
	for i := range panels {
		for j, p := range panels[i] {
			p.Draw(cs[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPlot(title, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	p.Y.Tick.Marker = spacedTicks{}
	p.X.Tick.Marker = spacedTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(10)
	return p
}

// spacedTicks are the default ticks labelled like the report's numbers
// (200 000, 1.5).
type spacedTicks struct{}

func (spacedTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label == "" {
			continue
		}
		switch v := ts[i].Value; {
		case v >= 1000:
			ts[i].Label = thousands(v)
		default:
			ts[i].Label = strconv.FormatFloat(v, 'g', 4, 64)
		}
	}
	return ts
}

// headroom leaves space above the tallest bar for the legend.
func headroom(p *plot.Plot, vals ...[]float64) {
	m := 0.0
	for _, vs := range vals {
		for _, v := range vs {
			m = math.Max(m, v)
		}
	}
	p.Y.Max = math.Max(p.Y.Max, m*1.35)
}

func noData(p *plot.Plot, why string) *plot.Plot {
	p.Title.Text += "\n(" + why + ")"
	p.HideAxes()
	return p
}

func bars(vals []float64, width vg.Length, c color.Color, offset vg.Length) *plotter.BarChart {
	b, err := plotter.NewBarChart(plotter.Values(vals), width)
	if err != nil {
		panic(err) // only for negative/NaN values, which the measurements never produce
	}
	b.Color = c
	b.LineStyle.Width = 0
	b.Offset = offset
	return b
}

func goal(p *plot.Plot, y float64, label string) {
	l, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: y}, {X: p.X.Max, Y: y}})
	if err != nil {
		return
	}
	l.Color = colGoal
	l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	p.Add(l)
	p.Legend.Add(label, l)
	if p.Y.Max < y*1.15 {
		p.Y.Max = y * 1.15
	}
}

func (r *results) catchupPlot() *plot.Plot {
	p := newPlot("1. Catch-up (rows/s, higher is better)", "rows/s")
	cu := r.Catchup
	if cu == nil || len(cu.Runs) == 0 {
		return noData(p, "no data")
	}
	n := 1 + len(cu.Runs)
	vals := make([]float64, n)
	vals[0] = cu.RecvRate
	p.Add(bars(vals, vg.Points(45), colRef, 0))
	names := []string{fmt.Sprintf("pg_recvlogical\n%s rows/s", thousands(cu.RecvRate))}
	for i, run := range cu.Runs {
		vals := make([]float64, n)
		vals[i+1] = run.Rate
		c := colMain
		short := "default queue"
		if i > 0 {
			short = "queue = backlog"
		}
		name := fmt.Sprintf("pgrealtime (%s)\n%s rows/s\nat the subscriber (%.2fx)", short, thousands(run.Rate), run.Ratio)
		if run.SubscriberErr != "" {
			c = colSecnd
			name = fmt.Sprintf("pgrealtime (%s)\n%s rows/s published;\nsubscriber dropped", short, thousands(run.Rate))
		}
		p.Add(bars(vals, vg.Points(45), c, 0))
		names = append(names, name)
	}
	p.NominalX(names...)
	p.Y.Max = cu.RecvRate
	for _, run := range cu.Runs {
		p.Y.Max = math.Max(p.Y.Max, run.Rate)
	}
	p.Y.Max *= 1.1
	p.Title.Text = fmt.Sprintf("1. Catch-up of %s rows (rows/s)", thousands(float64(cu.Rows)))
	return p
}

func (r *results) latencyPlot() *plot.Plot {
	p := newPlot("2. Live latency, commit -> client (ms)", "ms")
	if len(r.Latency) == 0 {
		return noData(p, "no data")
	}
	var p50, p99 []float64
	var names []string
	for _, l := range r.Latency {
		p50, p99 = append(p50, l.Lat.P50), append(p99, l.Lat.P99)
		names = append(names, fmt.Sprintf("%s rows/s\nto %s", thousands(float64(l.Rate)), thousands(float64(l.Subs))))
	}
	w := vg.Points(25)
	b1, b2 := bars(p50, w, colMain, -w/2), bars(p99, w, colSecnd, w/2)
	p.Add(b1, b2)
	p.Legend.Add("p50", b1)
	p.Legend.Add("p99", b2)
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(names))-0.5
	headroom(p, p50, p99)
	goal(p, 15, "p99 target at 1 000 rows/s (15 ms)")
	return p
}

func (r *results) fanoutPlot() *plot.Plot {
	f := r.Fanout
	p := newPlot("3. Fan-out: p99 vs deliveries/s", "p99 latency (ms)")
	if f == nil || len(f.Steps) == 0 {
		return noData(p, "no data")
	}
	p.Title.Text = fmt.Sprintf("3. Fan-out to %s subscribers: p99 vs deliveries/s", thousands(float64(f.Subs)))
	p.X.Label.Text = "deliveries/s"
	var xys plotter.XYs
	var labels []string
	steps := slices.Clone(f.Steps)
	slices.SortFunc(steps, func(a, b fanoutStep) int { return a.Rate - b.Rate })
	for _, s := range steps {
		xys = append(xys, plotter.XY{X: s.PerSec, Y: math.Max(s.Lat.P99, 1)}) // the log axis starts at 1 ms
		labels = append(labels, fmt.Sprintf("%d ev/s", s.Rate))
	}
	line, points, err := plotter.NewLinePoints(xys)
	if err == nil {
		line.Color, points.Color = colMain, colMain
		p.Add(line, points)
		p.Legend.Add("pgrealtime p99", line)
		if lb, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels}); err == nil {
			p.Add(lb)
		}
	}
	if len(f.Floor) > 0 { // the machine's floor, same steps
		floor := slices.Clone(f.Floor)
		slices.SortFunc(floor, func(a, b fanoutStep) int { return a.Rate - b.Rate })
		var fxys plotter.XYs
		for _, s := range floor {
			fxys = append(fxys, plotter.XY{X: s.PerSec, Y: math.Max(s.Lat.P99, 1)})
		}
		if fl, fp, err := plotter.NewLinePoints(fxys); err == nil {
			fl.Color, fp.Color = colRef, colRef
			fl.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
			p.Add(fl, fp)
			p.Legend.Add("floor p99 (bare server, one write(2) per delivery)", fl)
			xys = append(xys, fxys...)
		}
	}
	p.X.Min = 0
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 1, 1000
	for _, xy := range xys {
		p.X.Max = math.Max(p.X.Max, xy.X*1.15)
		p.Y.Max = math.Max(p.Y.Max, xy.Y*3)
	}
	p.Y.Label.Text = "p99 latency (ms, log scale)"
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.YOffs = vg.Points(10)
	goal(p, r.Config.FanoutP99, "100 ms")
	return p
}

func (r *results) fanoutCPUPlot() *plot.Plot {
	f := r.Fanout
	p := newPlot("3. Fan-out: CPU cores used", "cores (CPU s / s)")
	if f == nil || len(f.Steps) == 0 {
		return noData(p, "no data")
	}
	var srv, cl []float64
	var names []string
	for _, s := range f.Steps {
		srv, cl = append(srv, s.ServerCPU/s.Seconds), append(cl, s.ClientCPU/s.Seconds)
		names = append(names, fmt.Sprintf("%d ev/s", s.Rate))
	}
	w := vg.Points(20)
	b1, b2 := bars(srv, w, colMain, -w/2), bars(cl, w, colRef, w/2)
	p.Add(b1, b2)
	p.Legend.Add("pgrealtime", b1)
	p.Legend.Add("client process (load generator)", b2)
	p.NominalX(names...)
	headroom(p, srv, cl)
	return p
}

func (r *results) memoryPlot() *plot.Plot {
	p := newPlot("4. Memory per idle connection (KiB)", "KiB RSS growth per connection")
	m := r.Memory
	if m == nil || len(m.Points) == 0 {
		return noData(p, "no data")
	}
	var vals []float64
	var names []string
	for _, pt := range m.Points {
		vals = append(vals, pt.PerConnKB)
		names = append(names, thousands(float64(pt.Conns))+" connections")
	}
	p.Add(bars(vals, vg.Points(50), colMain, 0))
	headroom(p, vals)
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(names))-0.5
	goal(p, 12000.0/1024, "target 12 KB")
	return p
}

func (r *results) writesPlot() *plot.Plot {
	p := newPlot("5. Writers' throughput kept (ratio to nothing attached)", "ratio")
	wr := r.Writes
	if wr == nil || len(wr.Setups) == 0 || wr.Setups[0].Mean == 0 {
		return noData(p, "no data")
	}
	var names []string
	for i, s := range wr.Setups {
		vals := make([]float64, len(wr.Setups))
		vals[i] = s.Ratio
		c := colRef
		if s.Name == setupPgrealtime {
			c = colMain
		}
		p.Add(bars(vals, vg.Points(50), c, 0))
		name := s.Name
		if s.Name == setupTrigger {
			name = "trigger+NOTIFY"
		}
		names = append(names, fmt.Sprintf("%s\n%.2fx", name, s.Ratio))
	}
	p.NominalX(names...)
	p.Y.Max = 1.15
	return p
}
