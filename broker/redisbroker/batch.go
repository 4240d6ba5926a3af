package redisbroker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
)

// send writes one batch in one round trip on the session's dedicated
// connection: the XADDs in position order, XTRIM, the watermark script,
// and WAITAOF when the server has it. refused: Redis refused entries that
// the stream has already (another leader appended them).
func (b *Broker) send(s *session, batch []*txItem, w uint64) (refused bool, err error) {
	k, dc := b.keys, s.dc
	var cmds rueidis.Commands
	var ids []broker.Position
	var counts []int
	prev := s.prev
	for _, it := range batch {
		it.prev = prev
		for j, id := range it.ids {
			sid := streamID(id)
			cmds = append(cmds, dc.B().Xadd().Key(k.stream).Id(sid).FieldValue().
				FieldValue("p", streamID(prev)).FieldValue("e", rueidis.BinaryString(it.payloads[j])).Build())
			ids = append(ids, id)
			counts = append(counts, it.counts[j])
			prev = id
		}
	}
	nx := len(cmds)
	if nx > 0 {
		keep := s.kept.add(counts, b.cfg.HistorySize) + s.recentEntries(nx, b.trimGrace)
		cmds = append(cmds, dc.B().Xtrim().Key(k.stream).Maxlen().Almost().Threshold(strconv.Itoa(keep)).Build())
	}
	iw := -1
	if w > 0 {
		iw = len(cmds)
		cmds = append(cmds, dc.B().Evalsha().Sha1(s.sha).Numkeys(1).Key(k.flushed).Arg(watermarkText(w)).Build())
	}
	ia := -1
	if s.waitAOF {
		ia = len(cmds)
		cmds = append(cmds, dc.B().Waitaof().Numlocal(1).Numreplicas(0).Timeout(1000).Build())
	}
	start := time.Now()
	res := dc.DoMulti(s.ctx, cmds...)
	metrics.RedisBatchSeconds.Observe(time.Since(start).Seconds())

	var refusedID broker.Position
	appended := 0
	for i := 0; i < nx; i++ {
		err := res[i].Error()
		switch {
		case err == nil:
			appended += counts[i]
		case strings.Contains(err.Error(), "equal or smaller"):
			if refusedID.Less(ids[i]) {
				refusedID = ids[i]
			}
			// Not this session's entry: the stream holds its events as
			// another appender cut them; count it as one event (the
			// entries before the session count so too).
			s.kept.recount(nx-1-i, 1)
		default:
			return false, fmt.Errorf("xadd %s: %w", streamID(ids[i]), err)
		}
	}
	metrics.RedisAppendedEvents.Add(float64(appended))
	if nx > 0 {
		if err := res[nx].Error(); err != nil {
			return false, fmt.Errorf("xtrim: %w", err)
		}
	}
	if iw >= 0 {
		if err := res[iw].Error(); err != nil {
			if re, ok := rueidis.IsRedisErr(err); !ok || !re.IsNoScript() {
				return false, fmt.Errorf("raise watermark: %w", err)
			}
			// The server lost its script cache (a restart): EVAL once.
			if err := dc.Do(s.ctx, dc.B().Eval().Script(raiseWatermark).Numkeys(1).Key(k.flushed).Arg(watermarkText(w)).Build()).Error(); err != nil {
				return false, fmt.Errorf("raise watermark: %w", err)
			}
		}
	}
	if ia >= 0 {
		if err := b.checkWaitAOF(s, res[ia]); err != nil {
			return false, err
		}
	}
	if !refusedID.IsZero() {
		// Section 5: an id Redis refuses is there already if the stream's
		// last id is at or after it (same position, same content).
		last, _, err := lastID(s.ctx, dc, k.stream)
		if err != nil {
			return false, err
		}
		if last.Less(refusedID) {
			return false, fmt.Errorf("redis refused entry %s as not after the stream's last id, but the last id is %s: another appender interfered", streamID(refusedID), streamID(last))
		}
		b.log.Warn().Str("refused", streamID(refusedID)).Str("stream_last", streamID(last)).Msg("redis refused entries that the stream has already (another leader appended them): continuing after them")
		if prev.Less(last) {
			prev = last
		}
	}
	s.prev = prev
	return !refusedID.IsZero(), nil
}

// checkWaitAOF checks WAITAOF's reply: the batch is on the server's disk.
func (b *Broker) checkWaitAOF(s *session, r rueidis.RedisResult) error {
	v, err := r.AsIntSlice()
	if err != nil {
		if strings.Contains(err.Error(), "appendonly is disabled") || strings.Contains(err.Error(), "unknown command") {
			s.waitAOF = false
			b.log.Warn().Err(err).Msg("redis can no longer confirm appends on disk: acknowledging what Redis accepted")
			return nil
		}
		return fmt.Errorf("waitaof: %w", err)
	}
	if len(v) < 1 || v[0] < 1 {
		return errors.New("waitaof: redis did not write the batch to its append-only file within 1 s")
	}
	return nil
}

// keptEntries is the event counts of the newest entries this session
// appended, oldest first: as few as hold HistorySize events.
type keptEntries struct {
	counts []int // from head on
	head   int
	sum    int
}

// add records appended entries' event counts and returns how many of the
// newest entries hold history events: entries from before this session
// count as one event each (they hold at least one), so the stream never
// keeps fewer than history events.
func (k *keptEntries) add(counts []int, history int) int {
	for _, c := range counts {
		k.counts = append(k.counts, c)
		k.sum += c
	}
	for k.head < len(k.counts) && k.sum-k.counts[k.head] >= history {
		k.sum -= k.counts[k.head]
		k.head++
	}
	if k.head > len(k.counts)/2 {
		k.counts = append(k.counts[:0], k.counts[k.head:]...)
		k.head = 0
	}
	n := len(k.counts) - k.head
	if k.sum >= history {
		return n
	}
	return n + history - k.sum
}

// recount sets the event count of the entry back from the newest (0 is
// the newest) to n, if it is still counted.
func (k *keptEntries) recount(back, n int) {
	i := len(k.counts) - 1 - back
	if i < k.head || i >= len(k.counts) {
		return
	}
	k.sum += n - k.counts[i]
	k.counts[i] = n
}

// batchCount is how many entries a batch appended, and when.
type batchCount struct {
	at time.Time
	n  int
}

// recentEntries records a batch of n entries and returns how many entries
// were appended within grace (this batch included). The stream keeps them
// on top of HistorySize, so that trimming overtakes only a node that is
// more than grace behind: trimmed right after the XADDs to HistorySize, a
// burst larger than it (one big transaction) would overtake every node,
// the leader's own included, and reset them all.
func (s *session) recentEntries(n int, grace time.Duration) int {
	now := time.Now()
	i := 0
	for i < len(s.recent) && now.Sub(s.recent[i].at) > grace {
		i++
	}
	s.recent = append(s.recent[i:], batchCount{now, n})
	sum := 0
	for _, c := range s.recent {
		sum += c.n
	}
	return sum
}
