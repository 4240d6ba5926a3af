package clustertest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/client"
)

// TestCheckerCatches: the checker itself, without a cluster: it accepts a
// clean stream and a gap right after a gap event, and reports a silent gap,
// a duplicate, a position that differs between clients, and a client short
// of rows.
func TestCheckerCatches(t *testing.T) {
	row := func(seq int64) client.Event {
		return client.Event{Type: client.TypeRecord, Collection: "posts", Action: "create",
			Record: []byte(fmt.Sprintf(`{"id":%d,"seq":%d}`, seq, seq)), Position: fmt.Sprintf("0/%X:0", 0x1000+seq)}
	}
	gap := client.Event{Type: client.TypeGap}
	cases := []struct {
		name      string
		events    [][]client.Event // per client
		last      int64
		allowGaps bool
		want      string // in the failure; empty: passes
	}{
		{"clean", [][]client.Event{{row(1), row(2), row(3)}, {row(1), row(2), row(3)}}, 3, false, ""},
		{"gap after gap event", [][]client.Event{{row(1), gap, row(4)}}, 4, true, ""},
		{"gap event not allowed", [][]client.Event{{row(1), gap, row(4)}}, 4, false, "gap event(s)"},
		{"silent gap", [][]client.Event{{row(1), row(3)}}, 3, true, "SILENT GAP"},
		{"gap event does not cover a later gap", [][]client.Event{{row(1), gap, row(3), row(5)}}, 5, true, "SILENT GAP"},
		{"duplicate", [][]client.Event{{row(1), row(2), row(2), row(3)}}, 3, false, "duplicate"},
		{"position differs", [][]client.Event{{row(1)}, {func() client.Event { e := row(1); e.Position = "0/9:0"; return e }()}}, 1, false, "another client had it"},
		{"short", [][]client.Event{{row(1), row(2)}}, 3, false, "received 2 rows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newChecker()
			for i, evs := range tc.events {
				l := &clientLog{name: fmt.Sprint("client ", i)}
				c.logs = append(c.logs, l)
				for _, ev := range evs {
					c.event(l, ev, time.Now())
				}
			}
			rec := &recorder{}
			c.verifyTo(rec, tc.last, tc.allowGaps)
			got := strings.Join(rec.errs, "\n")
			if tc.want == "" && got != "" {
				t.Errorf("reported %q, want nothing", got)
			}
			if tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("reported %q, want %q", got, tc.want)
			}
		})
	}
}

// recorder collects what verify reports.
type recorder struct{ errs []string }

func (r *recorder) Helper()                      {}
func (r *recorder) Error(args ...any)            { r.errs = append(r.errs, fmt.Sprint(args...)) }
func (r *recorder) Errorf(f string, args ...any) { r.errs = append(r.errs, fmt.Sprintf(f, args...)) }
func (r *recorder) Logf(string, ...any)          {}
