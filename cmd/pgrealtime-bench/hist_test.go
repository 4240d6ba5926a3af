package main

import (
	"math"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond) // 1 µs .. 10 ms, uniform
	}
	s := h.Counts().Summary()
	if s.Count != 10000 {
		t.Fatalf("count = %d", s.Count)
	}
	for _, c := range []struct{ got, want float64 }{{s.P50, 5.0}, {s.P99, 9.9}, {s.Max, 10.0}} {
		if math.Abs(c.got-c.want)/c.want > 0.04 {
			t.Errorf("got %.3f ms, want %.3f ms (±4%%)", c.got, c.want)
		}
	}
	for us := uint64(0); us < 1<<36; us = us*3/2 + 1 {
		if mid, v := bucketMid(bucketOf(us)), float64(us); math.Abs(mid-v) > 0.04*v+1 {
			t.Fatalf("bucket of %d µs has mid %.0f", us, mid)
		}
	}
}
