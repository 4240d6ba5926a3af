package cdc

import (
	"strings"
	"testing"
)

// TestReplAppName: the run id always survives Postgres's 63-byte cut of
// application_name, whatever name the user configured.
func TestReplAppName(t *testing.T) {
	id := newRunID()
	if len(id) != 12 || id == newRunID() {
		t.Fatalf("run id %q: want 12 hex characters, different each time", id)
	}
	for _, c := range []struct{ base, want string }{
		{"", "pgrealtime/" + id},
		{"orders-feed", "orders-feed/" + id},
		{"café\tfeed", "caf___feed/" + id},
		{strings.Repeat("x", 80), strings.Repeat("x", 50) + "/" + id},
	} {
		got := replAppName(c.base, id)
		if got != c.want || len(got) > maxAppName {
			t.Errorf("replAppName(%q) = %q (%d bytes), want %q", c.base, got, len(got), c.want)
		}
	}
}
