package redisbroker

import (
	"context"

	"github.com/redis/rueidis"
)

// The follower's XREAD sent ahead: after a full batch, the next XREAD goes
// out (without BLOCK) while the batch is applied; nothing else is sent on
// the loop's connection until its reply is in (conn settles it first).

// prefetch is an XREAD sent ahead (without BLOCK) for the entries after
// cursor, while the loop applies the batch before them.
type prefetch struct {
	cursor  string
	done    chan struct{}
	entries []rueidis.XRangeSlice
	err     error
}

// prefetch sends the next XREAD on the loop's connection; the loop sends
// nothing else on it until settle.
func (f *follower) prefetch(ctx context.Context, cursor string) {
	c := f.conn(ctx)
	p := &prefetch{cursor: cursor, done: make(chan struct{})}
	cmd := c.B().Xread().Count(readCount).Streams().Key(f.b.keys.stream).Id(cursor).Build()
	f.pre = p
	go func() {
		defer close(p.done)
		rctx, cancel := context.WithTimeout(ctx, readGraceTime)
		defer cancel()
		res, err := c.Do(rctx, cmd).AsXReadSlices()
		if err != nil && !rueidis.IsRedisNil(err) {
			p.err = err
		}
		p.entries = res[f.b.keys.stream]
	}()
}

// settle waits for the prefetch in flight, if any (its result stays).
func (f *follower) settle() {
	if f.pre != nil {
		<-f.pre.done
	}
}

// prefetched returns the prefetched entries when they continue where the
// loop is (false: none, an error, or the loop moved on: XREAD again).
func (f *follower) prefetched() ([]rueidis.XRangeSlice, bool) {
	p := f.pre
	if p == nil {
		return nil, false
	}
	<-p.done
	f.pre = nil
	if p.err != nil || p.cursor != f.cursor || len(p.entries) == 0 {
		return nil, false
	}
	f.b.prefetchHits.Add(1)
	return p.entries, true
}
