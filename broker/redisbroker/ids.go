package redisbroker

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgrealtime/pgrealtime/broker"
)

// streamID is the stream entry id of position p: "<commit LSN>-<index>"
// (docs/cluster.md section 5). Index 0 names a base ("<LSN>-0"), which is
// never an entry.
func streamID(p broker.Position) string {
	b := make([]byte, 0, 32)
	b = strconv.AppendUint(b, p.LSN, 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(p.Index), 10)
	return string(b)
}

// parseStreamID parses an entry id or a base written by streamID.
func parseStreamID(s string) (broker.Position, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return broker.Position{}, fmt.Errorf("stream id %q is not <lsn>-<index>", s)
	}
	lsn, err := strconv.ParseUint(ms, 10, 64)
	if err != nil {
		return broker.Position{}, fmt.Errorf("stream id %q: bad lsn part", s)
	}
	idx, err := strconv.ParseUint(seq, 10, 32)
	if err != nil {
		return broker.Position{}, fmt.Errorf("stream id %q: index part is not a 32-bit number", s)
	}
	return broker.Position{LSN: lsn, Index: uint32(idx)}, nil
}

// watermarkText is W as stored: 16 upper-case hex digits, so that string
// order (the Lua script compares strings) is LSN order.
func watermarkText(lsn uint64) string { return fmt.Sprintf("%016X", lsn) }

// parseWatermark parses watermarkText's output.
func parseWatermark(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("flushed watermark %q is not 16 hex digits", s)
	}
	return strconv.ParseUint(s, 16, 64)
}
