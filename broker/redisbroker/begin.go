package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
)

// Errors of Begin that an operator must act on.
var (
	// ErrFormat: the stream was written with another event format.
	ErrFormat = errors.New("redis stream has another event format")
	// ErrOrigin: the stream was written from another database.
	ErrOrigin = errors.New("redis stream was written from another database")
)

// raiseWatermark sets KEYS[1] to ARGV[1] unless it already holds a value
// at or after it (16 hex digits: string order is LSN order).
const raiseWatermark = `local cur = redis.call('GET', KEYS[1])
if (not cur) or cur < ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0`

// Begin starts an append session (docs/cluster.md sections 5 and 6): it
// ends the previous session, checks the stream's format and origin, reads
// the stream's last id L (events at or before it are skipped) and the
// flushed watermark W, and decides the first entry's predecessor: L when
// W ≥ from, else the base <from>-0 (data lost, or a new cluster).
func (b *Broker) Begin(ctx context.Context, from broker.Position) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	a := &b.app
	a.end()
	dc, release := b.c.Dedicate()
	s, err := b.begin(ctx, dc, from)
	if err != nil {
		release()
		return err
	}
	s.dc, s.release = dc, release
	a.start(s)
	return nil
}

func (b *Broker) begin(ctx context.Context, dc rueidis.DedicatedClient, from broker.Position) (*session, error) {
	k := b.keys
	origin := b.currentOrigin()
	cmds := rueidis.Commands{
		dc.B().Set().Key(k.format).Value(streamFormat).Nx().Build(),
		dc.B().Get().Key(k.format).Build(),
		dc.B().ScriptLoad().Script(raiseWatermark).Build(),
		dc.B().Get().Key(k.flushed).Build(),
	}
	if origin != "" {
		cmds = append(cmds, dc.B().Set().Key(k.origin).Value(origin).Nx().Build(), dc.B().Get().Key(k.origin).Build())
	}
	res := dc.DoMulti(ctx, cmds...)
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return nil, fmt.Errorf("begin: redis: %w", err)
		}
	}
	sha, err := res[2].ToString()
	if err != nil {
		return nil, fmt.Errorf("begin: script load: %w", err)
	}
	if f, _ := res[1].ToString(); f != streamFormat {
		return nil, fmt.Errorf("%w: %s is %q, this version writes format %s; delete the keys pgrealtime:{%s}:* (pgrealtime cluster reset --yes) and restart the nodes, or run the version that wrote it", ErrFormat, k.format, f, streamFormat, b.cfg.Slot)
	}
	var w uint64
	hasW := false
	if ws, err := res[3].ToString(); err == nil {
		if w, err = parseWatermark(ws); err != nil {
			return nil, fmt.Errorf("begin: %s: %w; delete the keys pgrealtime:{%s}:* (pgrealtime cluster reset --yes) and restart the nodes", k.flushed, err, b.cfg.Slot)
		}
		hasW = true
	}
	if origin != "" {
		if o, _ := res[5].ToString(); o != origin {
			return nil, fmt.Errorf("%w: %s is %q, this database is %q: if the database was restored or replaced, delete the keys pgrealtime:{%s}:* (pgrealtime cluster reset --yes) and restart the nodes; otherwise point this node at the database or Redis it belongs to", ErrOrigin, k.origin, o, origin, b.cfg.Slot)
		}
	}
	last, hasLast, err := lastID(ctx, dc, k.stream)
	if err != nil {
		return nil, err
	}
	s := &session{sha: sha, from: from.LSN, skip: last, prev: broker.Position{LSN: from.LSN}, confW: w, wantW: w}
	if hasLast && hasW && w >= from.LSN {
		s.prev = last
	}
	s.floor = s.prev
	if hasLast && s.floor.Less(last) {
		s.floor = last
	}
	s.waitAOF = b.probeWaitAOF(ctx, dc)
	ev := b.log.Info().Str("from", from.String()).Str("first_p", streamID(s.prev)).Bool("waitaof", s.waitAOF)
	if hasLast {
		ev = ev.Str("stream_last", streamID(last))
	}
	if hasW {
		ev = ev.Str("flushed", watermarkText(w))
	}
	ev.Msg("append session begins")
	return s, nil
}

// lastID reads the stream's last generated id (XINFO STREAM); a missing
// stream has none.
func lastID(ctx context.Context, c rueidis.CoreClient, key string) (broker.Position, bool, error) {
	m, err := c.Do(ctx, c.B().XinfoStream().Key(key).Build()).AsMap()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return broker.Position{}, false, nil
		}
		return broker.Position{}, false, fmt.Errorf("xinfo stream: %w", err)
	}
	v, ok := m["last-generated-id"]
	if !ok {
		return broker.Position{}, false, errors.New("xinfo stream: no last-generated-id")
	}
	s, err := v.ToString()
	if err != nil {
		return broker.Position{}, false, fmt.Errorf("xinfo stream last-generated-id: %w", err)
	}
	p, err := parseStreamID(s)
	if err != nil {
		return broker.Position{}, false, err
	}
	return p, !p.IsZero(), nil
}

// probeWaitAOF reports whether the server can confirm writes on disk with
// WAITAOF (Redis ≥ 7.2 with appendonly yes).
func (b *Broker) probeWaitAOF(ctx context.Context, dc rueidis.DedicatedClient) bool {
	err := dc.Do(ctx, dc.B().Waitaof().Numlocal(1).Numreplicas(0).Timeout(1000).Build()).Error()
	if err == nil {
		return true
	}
	b.log.Info().Err(err).Msg("redis cannot confirm appends on disk (WAITAOF needs Redis 7.2 and appendonly yes): acknowledging what Redis accepted; use appendfsync always for nothing lost")
	return false
}
