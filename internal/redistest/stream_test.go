package redistest

import (
	"strings"
	"testing"
	"time"
)

// TestStreamIDsOnlyIncrease checks, on the real redis-server, the Redis
// behaviour the cluster design (docs/cluster.md) rests on: XADD with an
// explicit id refuses an id that is not after the stream's last one, also
// after the entries were trimmed away and after a restart with AOF; a
// restart without persistence forgets the stream, so a re-append is
// accepted there (which is why every entry carries its predecessor).
func TestStreamIDsOnlyIncrease(t *testing.T) {
	s := Start(t, Options{AOF: true})
	c := dial(t, s)
	const key = "pgrealtime:{slot}:stream"
	xadd := func(c *respConn, id string) any {
		t.Helper()
		v, err := c.do(10*time.Second, "XADD", key, "MAXLEN", "~", "100", id, "e", "x", "p", "0-0")
		if err != nil {
			t.Fatalf("XADD %s: %v", id, err)
		}
		return v
	}
	refused := func(v any) bool {
		e, ok := v.(errReply)
		return ok && strings.Contains(string(e), "equal or smaller")
	}
	// Position 0/64:1 and 0/64:2 (commit LSN 100, index 1 and 2).
	if got := xadd(c, "100-1"); got != "100-1" {
		t.Fatalf("XADD 100-1 = %v", got)
	}
	if got := xadd(c, "100-2"); got != "100-2" {
		t.Fatalf("XADD 100-2 = %v", got)
	}
	for _, id := range []string{"100-2", "100-1", "99-7"} {
		if got := xadd(c, id); !refused(got) {
			t.Fatalf("re-append of %s = %v, want a refusal", id, got)
		}
	}
	c.must(t, "XTRIM", key, "MAXLEN", "0")
	if got := c.must(t, "XLEN", key); got != int64(0) {
		t.Fatalf("XLEN after trim = %v", got)
	}
	if got := xadd(c, "100-2"); !refused(got) {
		t.Fatalf("re-append after trim = %v, want a refusal (last id kept)", got)
	}
	s.Kill()
	s.Restart()
	c = dial(t, s)
	if got := xadd(c, "100-2"); !refused(got) {
		t.Fatalf("re-append after a restart with AOF = %v, want a refusal", got)
	}
	if got := xadd(c, "200-1"); got != "200-1" {
		t.Fatalf("XADD 200-1 = %v", got)
	}
	s.RestartEmpty()
	c = dial(t, s)
	if got := xadd(c, "100-1"); got != "100-1" {
		t.Fatalf("XADD 100-1 after data loss = %v: a lost stream accepts old ids again", got)
	}
}
