package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are recorded in microseconds into log-linear buckets: exact below
// 64 µs, then 32 buckets per power of two (about 3% resolution), which is
// plenty for p50/p99 and cheap enough (one atomic add) to record every one of
// hundreds of thousands of deliveries per second.
const histBuckets = 64 + 42*32

// Hist is a concurrent latency histogram.
type Hist struct {
	buckets [histBuckets]atomic.Uint64
	maxUS   atomic.Int64
}

func bucketOf(us uint64) int {
	if us < 64 {
		return int(us)
	}
	shift := bits.Len64(us) - 6
	i := 64 + (shift-1)*32 + int(us>>uint(shift)) - 32
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// bucketMid is a representative value (µs) of bucket i.
func bucketMid(i int) float64 {
	if i < 64 {
		return float64(i)
	}
	k := i - 64
	shift := uint(k/32 + 1)
	m := uint64(k%32 + 32)
	lo, hi := m<<shift, (m+1)<<shift
	return float64(lo+hi) / 2
}

// Record adds one latency sample. Negative samples (clock granularity) count
// as zero.
func (h *Hist) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.buckets[bucketOf(uint64(us))].Add(1)
	for {
		m := h.maxUS.Load()
		if us <= m || h.maxUS.CompareAndSwap(m, us) {
			return
		}
	}
}

// Counts returns a copy of the bucket counts (for shipping between processes).
func (h *Hist) Counts() HistCounts {
	c := HistCounts{Buckets: make([]uint64, histBuckets), MaxUS: h.maxUS.Load()}
	for i := range h.buckets {
		c.Buckets[i] = h.buckets[i].Load()
	}
	return c
}

// HistCounts is a plain snapshot of a Hist; snapshots of several processes
// can be merged.
type HistCounts struct {
	Buckets []uint64 `json:"b"`
	MaxUS   int64    `json:"max_us"`
}

// Merge adds o into c.
func (c *HistCounts) Merge(o HistCounts) {
	if c.Buckets == nil {
		c.Buckets = make([]uint64, histBuckets)
	}
	for i, n := range o.Buckets {
		if i < len(c.Buckets) {
			c.Buckets[i] += n
		}
	}
	if o.MaxUS > c.MaxUS {
		c.MaxUS = o.MaxUS
	}
}

// Count is the number of samples.
func (c HistCounts) Count() uint64 {
	var n uint64
	for _, b := range c.Buckets {
		n += b
	}
	return n
}

// Quantile returns the q-quantile (0..1) in milliseconds; 0 without samples.
func (c HistCounts) Quantile(q float64) float64 {
	n := c.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n-1)) + 1
	var seen uint64
	for i, b := range c.Buckets {
		seen += b
		if seen >= rank {
			v := bucketMid(i)
			if max := float64(c.MaxUS); v > max {
				v = max
			}
			return v / 1000
		}
	}
	return float64(c.MaxUS) / 1000
}

// Latency summarises a histogram in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns count, p50, p99 and max.
func (c HistCounts) Summary() Latency {
	return Latency{Count: c.Count(), P50: c.Quantile(0.50), P99: c.Quantile(0.99), Max: float64(c.MaxUS) / 1000}
}
