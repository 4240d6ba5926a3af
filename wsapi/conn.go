package wsapi

import (
	"context"
	"errors"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// Protocol abuse: more than abuseBurst bad_request errors, refilled at
// abuseRate per second, closes the connection with 1008.
const (
	abuseBurst = 20
	abuseRate  = 0.5
)

// item is one entry of a connection's send queue: a reply, one event, or
// the batch of a replay (one entry, so that a resume of up to the history
// size does not overflow the queue).
type item struct {
	raw []byte
	ev  *broker.Event
	evs []*broker.Event
	fr  framer // non-nil: ev or evs go out in another protocol's frames
}

// framer wraps an event's shared encoding into the frame of one recipient
// of another protocol (the Supabase endpoint's channels). It appends the
// frame to b, or returns b unchanged to skip the event.
type framer interface {
	appendFrame(b []byte, ev *broker.Event) []byte
}

// subscription is one of a connection's patterns, with the topic as the
// client wrote it and the canonical pattern (its key).
type subscription struct {
	key     string
	pattern broker.Pattern
	topic   string
}

// subList is a connection's subscriptions, at most MaxSubscriptions: a
// slice, because a map costs most idle connections (one subscription)
// several hundred bytes.
type subList []subscription

func (l subList) find(key string) int {
	for i := range l {
		if l[i].key == key {
			return i
		}
	}
	return -1
}

func (l subList) has(key string) bool { return l.find(key) >= 0 }

// remove deletes the subscriptions with these keys and returns the list.
func (l subList) remove(keys ...string) subList {
	for _, k := range keys {
		if i := l.find(k); i >= 0 {
			l = slices.Delete(l, i, i+1)
		}
	}
	if len(l) == 0 {
		return nil
	}
	return l
}

// conn is one WebSocket connection. It is the broker.Subscriber of that
// connection.
type conn struct {
	s           *Server
	ws          *websocket.Conn
	id          string
	remote      string
	connectedAt time.Time

	ident atomic.Pointer[auth.Identity]

	// Send queue: a FIFO that grows on demand (q[qhead:], at most
	// SendQueue items) under qmu, this connection's own lock (never shared
	// with other connections; Deliver holds it only to append).
	qmu     sync.Mutex
	q       []item
	qhead   int
	holding bool   // a subscribe is in progress: deliveries wait in held
	held    []item // until its reply is queued
	closed  bool   // no more enqueues
	// How far behind (see tooFarBehindLocked): behindSince is when the
	// connection was last seen more than SendQueue messages behind (zero:
	// it is not), behindMark the value popped reaches once everything
	// queued at that time is written; popped counts the items taken.
	behindSince time.Time
	behindMark  uint64
	popped      uint64
	// Writing (see writer.go), under qmu: live once run started (before
	// that items only queue up); owned while a writer (the server's write
	// pool or this connection's own flusher goroutine) has the connection;
	// ownerGone, when set, is closed when the owner lets go.
	live      bool
	owned     bool
	ownerGone chan struct{}

	closeOnce sync.Once
	done      chan struct{}  // closed when the connection starts closing
	closing   sync.WaitGroup // the close handshake, once started
	cork      *corkConn      // the hijacked socket; nil without an upgrade (tests)

	// Reader goroutine state; subs is written only by the reader goroutine,
	// under subMu so that /api/connections can read it.
	limiter *rate.Limiter
	abuse   *rate.Limiter
	// ph is the Phoenix session of a Supabase endpoint connection (nil on
	// /realtime).
	ph    *phoenixConn
	subMu sync.Mutex
	subs  subList

	// One timer per connection for the pings and the token's expiry
	// (tick), under tmu, on the server's clock.
	tmu      sync.Mutex
	timer    timer
	nextPing time.Time
	pinging  bool
}

var _ broker.Subscriber = (*conn)(nil)

// newConn makes the connection of an upgraded socket; remote is the
// client's address (the request is not kept).
func (s *Server) newConn(ws *websocket.Conn, remote string, id *auth.Identity) *conn {
	c := &conn{
		s:           s,
		ws:          ws,
		id:          newConnID(),
		remote:      remote,
		connectedAt: time.Now().UTC(),
		done:        make(chan struct{}),
		limiter:     rate.NewLimiter(rate.Limit(s.cfg.SubscribeRate), max(1, int(s.cfg.SubscribeRate))),
	}
	c.ident.Store(id)
	return c
}

// logger is the server's logger with the connection's id and subject. It
// is made for each use (connection events are rare): kept, it would cost
// every idle connection a few hundred bytes.
func (c *conn) logger() *zerolog.Logger {
	l := c.s.log.With().Str(logConnID, c.id).Str(logSubject, c.ident.Load().Subject).Logger()
	return &l
}

// start sends the connected message, arms the token expiry and the pings
// and starts writing. It runs on the upgrade's goroutine, so that the
// stack it needs is not kept by the connection's reader goroutine.
func (c *conn) start() {
	metrics.Connections.Inc()
	c.logger().Debug().Str(logRemote, c.remote).Str(logRole, c.ident.Load().Role).Msg("connected")
	if c.ph == nil {
		c.sendConnected()
	}
	c.tmu.Lock()
	c.nextPing = c.s.clock.Now().Add(c.s.cfg.PingInterval)
	c.tmu.Unlock()
	c.armExpiry()
	c.startWriting()
}

// sendConnected queues the first message of a /realtime session.
func (c *conn) sendConnected() {
	c.sendJSON(connectedMsg{
		Type:         "connected",
		ConnectionID: c.id,
		ServerTime:   time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Limits: limitsMsg{
			MaxSubscriptions: c.s.cfg.MaxSubscriptions,
			SubscribeRate:    c.s.cfg.SubscribeRate,
			MaxMessageBytes:  c.s.cfg.MaxMessageBytes,
		},
	})
}

// run reads the connection until it closes, then tears it down. It runs
// on the connection's one goroutine, after start.
func (c *conn) run() {
	c.readLoop()

	// Teardown: finish the close handshake (bounded by the library: 5 s to
	// write the close frame, 5 s to wait for the peer's), then drop
	// everything.
	c.closeWith(websocket.StatusNormalClosure, "")
	c.closing.Wait()
	c.waitWriter()
	c.s.cfg.Broker.Remove(c)
	if c.ph != nil {
		c.ph.closeAll()
	}
	c.tmu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.tmu.Unlock()
	c.subMu.Lock()
	metrics.Subscriptions.Sub(float64(len(c.subs)))
	c.subMu.Unlock()
	metrics.Connections.Dec()
	c.logger().Debug().Msg("disconnected")
}

// closeWith starts closing the connection with code, once: no more
// deliveries, the writer stops, the broker forgets the connection, and the
// close frame is sent from another goroutine (never blocking the caller).
// It reports whether this call started the close.
func (c *conn) closeWith(code websocket.StatusCode, reason string) bool {
	started := false
	c.closeOnce.Do(func() {
		started = true
		c.qmu.Lock()
		c.closed = true
		c.held = nil
		c.qmu.Unlock()
		close(c.done)
		if code != websocket.StatusNormalClosure {
			c.logger().Debug().Int(logCode, int(code)).Str("reason", reason).Msg("closing connection")
		}
		c.closing.Add(1)
		go func() {
			defer c.closing.Done()
			// Called from Deliver under the broker's lock: never call the
			// broker synchronously here.
			c.s.cfg.Broker.Remove(c)
			c.cork.stopData() // the close frame is the last frame
			c.ws.Close(code, reason)
		}()
	})
	return started
}

// drop closes the socket at once, without a close handshake.
func (c *conn) drop() {
	go c.ws.CloseNow() // fails the pending read
}

// slow closes a connection that cannot keep up with 4008.
func (c *conn) slow(why string) {
	if c.closeWith(StatusSlowConsumer, "slow consumer") {
		metrics.SlowConsumerCloses.Inc()
		c.logger().Warn().Str("reason", why).Msg("slow consumer: closing with 4008")
	}
}

// Resync implements broker.Subscriber: the node can no longer guarantee
// this connection every event (a discontinuity of the stream), so it is
// closed with 1001; the client reconnects and resumes with since, which
// replays exactly or answers history_unavailable. It never blocks.
func (c *conn) Resync() {
	c.closeWith(StatusGoingAway, resyncReason)
}

// resyncReason is the close reason of Resync.
const resyncReason = "stream discontinuity: reconnect and resume with since"

// Deliver implements broker.Subscriber. It never blocks.
func (c *conn) Deliver(ev *broker.Event) {
	if !c.s.allow(c.ident.Load(), ev) {
		return
	}
	c.enqueue(item{ev: ev})
}

// DeliverBatch implements broker.Subscriber: the events pass the rules
// and are queued as one item.
func (c *conn) DeliverBatch(evs []*broker.Event) {
	id := c.ident.Load()
	out := make([]*broker.Event, 0, len(evs))
	for _, ev := range evs {
		if c.s.allow(id, ev) {
			out = append(out, ev)
		}
	}
	if len(out) > 0 {
		c.enqueue(item{evs: out})
	}
}

// enqueue adds it to the send queue without blocking; on overflow the
// connection is closed with 4008.
func (c *conn) enqueue(it item) {
	c.qmu.Lock()
	ok := c.pushLocked(it)
	c.qmu.Unlock()
	if !ok {
		c.slow("send queue: too far behind for too long")
	}
}

func (c *conn) pushLocked(it item) bool {
	if c.closed {
		return true
	}
	n := len(c.q) - c.qhead + len(c.held)
	if n >= c.s.cfg.SendQueue && c.tooFarBehindLocked(n) {
		return false
	}
	if c.holding {
		c.held = append(c.held, it)
		return true
	}
	n = len(c.q) - c.qhead
	if len(c.q) == cap(c.q) && c.qhead > 0 { // reuse the space already written
		copy(c.q, c.q[c.qhead:])
		clear(c.q[n:])
		c.q, c.qhead = c.q[:n], 0
	}
	c.q = append(c.q, it)
	if c.s.queueDepth != nil {
		c.s.queueDepth(n + 1 + len(c.held))
	}
	if c.live && !c.owned {
		c.owned = true
		c.s.writers.schedule(c)
	}
	return true
}

// HardQueue is the most messages a connection may ever be behind, for a
// send queue of sendQueue: 64 times it, at least 65 536. It bounds what a
// connection holds during the BehindTimeout a burst is given (a queued
// message costs the connection about 60 bytes: the events' bytes are
// shared).
func HardQueue(sendQueue int) int { return max(64*sendQueue, 1<<16) }

// tooFarBehindLocked reports whether a connection with n messages queued,
// n >= SendQueue, may not take one more: n reached HardQueue, or messages
// have waited in a queue longer than SendQueue for BehindTimeout and the
// client is not taking data (a write to its socket is waiting). A burst
// (the transactions of one WAL flush, read and published at once faster
// than any writer can write them), or a server too busy to write, makes
// the queue long for as long as the writers take to catch up, with a
// socket that takes everything; behind a client that stopped reading, or
// reads slower than the stream, messages wait longer and longer and the
// socket is full. A message count alone cannot tell the two apart.
//
// The age is measured without a clock read per message: when the
// connection is first seen past SendQueue, the clock starts, and the mark
// is set at the end of what is queued then. When the writer passes the
// mark, the clock restarts from there (or stops, if the queue is back
// within SendQueue). So a connection is closed only when a message has
// waited at least BehindTimeout, and one whose messages keep waiting
// behind a full socket is closed within about twice that.
func (c *conn) tooFarBehindLocked(n int) bool {
	if n >= c.s.hardQueue {
		return true
	}
	now := time.Now()
	if c.behindSince.IsZero() {
		c.behindSince, c.behindMark = now, c.popped+uint64(n)
		return false
	}
	return now.Sub(c.behindSince) >= c.s.cfg.BehindTimeout && c.cork.blocked()
}

// poppedLocked moves the clock of tooFarBehindLocked after the writer took
// an item.
func (c *conn) poppedLocked() {
	c.popped++
	if c.behindSince.IsZero() || c.popped < c.behindMark {
		return
	}
	if n := len(c.q) - c.qhead + len(c.held); n > c.s.cfg.SendQueue {
		c.behindSince, c.behindMark = time.Now(), c.popped+uint64(n)
	} else {
		c.behindSince = time.Time{}
	}
}

// queueKeep is the capacity an empty send queue keeps; a bigger one (after
// a burst) is released. One slot: an idle connection keeps almost nothing,
// and a connection that gets an event now and then reuses its slot.
const queueKeep = 1

// pop takes the first item of the send queue.
func (c *conn) pop() (item, bool) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.popLocked()
}

func (c *conn) popLocked() (item, bool) {
	if c.qhead == len(c.q) {
		return item{}, false
	}
	it := c.q[c.qhead]
	c.q[c.qhead] = item{}
	c.qhead++
	c.poppedLocked()
	if c.qhead == len(c.q) {
		if cap(c.q) > queueKeep {
			c.q = nil
		} else {
			c.q = c.q[:0]
		}
		c.qhead = 0
	}
	return it, true
}

// hold makes deliveries wait until release, so that the reply to a
// subscribe is queued before the first event of the subscription.
func (c *conn) hold() {
	c.qmu.Lock()
	c.holding = true
	c.qmu.Unlock()
}

// release queues the replies (nil ones skipped), then the deliveries held
// since hold.
func (c *conn) release(replies ...[]byte) {
	c.qmu.Lock()
	held := c.held
	c.held, c.holding = nil, false
	ok := true
	for _, r := range replies {
		if ok && r != nil {
			ok = c.pushLocked(item{raw: r})
		}
	}
	for i := 0; ok && i < len(held); i++ {
		ok = c.pushLocked(held[i])
	}
	c.qmu.Unlock()
	if !ok {
		c.slow("send queue: too far behind for too long")
	}
}

// queued is the number of items waiting in the send queue.
func (c *conn) queued() int {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return len(c.q) - c.qhead + len(c.held)
}

var deliveredCounters = map[string]prometheus.Counter{}

func init() {
	for _, a := range []string{broker.ActionCreate, broker.ActionUpdate, broker.ActionDelete, broker.ActionTruncate, "custom"} {
		deliveredCounters[a] = metrics.EventsDelivered.WithLabelValues(a)
	}
}

func countDelivered(ev *broker.Event) {
	a := ev.Action
	if ev.Kind == broker.KindCustom {
		a = "custom"
	}
	if c, ok := deliveredCounters[a]; ok {
		c.Inc()
		return
	}
	metrics.EventsDelivered.WithLabelValues(a).Inc()
}

func (c *conn) write(it item) bool {
	switch {
	case it.fr != nil:
		return c.writeFramed(it)
	case it.raw != nil:
		return c.writeFrame(it.raw)
	case it.ev != nil:
		if !c.writeFrame(it.ev.JSON) {
			return false
		}
		countDelivered(it.ev)
	default:
		for _, ev := range it.evs {
			select {
			case <-c.done:
				return false
			default:
			}
			if !c.writeFrame(ev.JSON) {
				return false
			}
			countDelivered(ev)
		}
	}
	return true
}

// framePool holds the buffers writeFramed builds frames in (the cork
// copies a frame, so a buffer is free again once it is written).
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeFramed writes the events of it through its framer.
func (c *conn) writeFramed(it item) bool {
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)
	one := func(ev *broker.Event) bool {
		b := it.fr.appendFrame((*bp)[:0], ev)
		if len(b) == 0 {
			return true
		}
		ok := c.writeFrame(b)
		if cap(b) <= 1<<20 {
			*bp = b[:0]
		}
		if ok {
			countDelivered(ev)
		}
		return ok
	}
	if it.ev != nil {
		return one(it.ev)
	}
	for _, ev := range it.evs {
		if c.isDone() || !one(ev) {
			return false
		}
	}
	return true
}

// writeFrame writes one text frame. While corked it only copies b, unless
// the cork buffer is full, in which case the flush is bounded by the write
// deadline of the cork.
func (c *conn) writeFrame(b []byte) bool {
	var err error
	if c.cork != nil {
		err = c.cork.writeText(b)
	} else {
		err = c.ws.Write(context.Background(), websocket.MessageText, b)
	}
	if errors.Is(err, errClosing) {
		return false // the close frame is on its way: nothing to drop
	}
	if err != nil {
		c.writeFailed(err)
		return false
	}
	return true
}

// writeFailed handles a failed write or flush: the socket is dropped (a
// partial frame may have been written, so no close frame can follow it).
// A write that timed out is a slow consumer (4008: the cork's onTimeout
// already started that close, and gave the flush one more timeout to let
// the close frame follow the frames; this one missed it too).
func (c *conn) writeFailed(err error) {
	select {
	case <-c.done:
		return
	default:
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.slow("write timed out")
	} else {
		c.logger().Debug().Err(err).Msg("write failed")
	}
	c.drop()
}

// armExpiry sets the connection's timer for the next ping or the expiry
// of the current identity's token, whichever comes first (call it after
// the identity changes).
func (c *conn) armExpiry() {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	c.armLocked()
}

func (c *conn) armLocked() {
	// While a ping waits for its pong, nextPing is in the past: only the
	// expiry is due (the end of the ping re-arms for the next one).
	var due time.Time
	if !c.pinging {
		due = c.nextPing
	}
	if exp := c.ident.Load().ExpiresAt; !exp.IsZero() && (due.IsZero() || exp.Before(due)) {
		due = exp
	}
	if due.IsZero() {
		if c.timer != nil {
			c.timer.Stop()
		}
		return
	}
	d := due.Sub(c.s.clock.Now())
	if c.timer == nil {
		c.timer = c.s.clock.AfterFunc(d, c.tick)
		return
	}
	c.timer.Reset(d)
}

// tick closes the connection with 4001 when its token has expired, and
// pings the peer when a ping is due (on the timer's goroutine, which
// exists only while it runs): a peer that does not answer within
// PingInterval is dropped.
func (c *conn) tick() {
	if c.isDone() {
		return
	}
	now := c.s.clock.Now()
	if exp := c.ident.Load().ExpiresAt; !exp.IsZero() && !now.Before(exp) {
		c.logger().Info().Msg("token expired: closing with 4001")
		c.closeWith(StatusTokenExpired, "token expired")
		return
	}
	c.tmu.Lock()
	ping := !c.pinging && !now.Before(c.nextPing)
	c.pinging = c.pinging || ping
	if !c.isDone() {
		c.armLocked() // while pinging: for the expiry only
	}
	c.tmu.Unlock()
	if !ping {
		return
	}
	// The pong is awaited for PingInterval on the server's clock.
	ctx, cancel := context.WithCancel(context.Background())
	pongWait := c.s.clock.AfterFunc(c.s.cfg.PingInterval, cancel)
	err := c.ws.Ping(ctx)
	pongWait.Stop()
	cancel()
	if err != nil {
		if !c.isDone() {
			c.logger().Info().Err(err).Msg("peer did not answer ping: dropping connection")
			c.drop() // a dead peer cannot do a close handshake
		}
		return
	}
	c.tmu.Lock()
	c.pinging = false
	c.nextPing = c.s.clock.Now().Add(c.s.cfg.PingInterval)
	if !c.isDone() {
		c.armLocked()
	}
	c.tmu.Unlock()
}

// readLoop reads and handles client frames until the socket closes.
func (c *conn) readLoop() {
	for {
		// No cancellable context: it would cost an allocation per read
		// and per idle connection; drop closes the socket instead.
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			if st := websocket.CloseStatus(err); st == -1 && !errors.Is(err, context.Canceled) {
				select {
				case <-c.done:
				default:
					c.logger().Debug().Err(err).Msg("read failed")
				}
			}
			return
		}
		if typ != websocket.MessageText && c.ph == nil {
			c.closeWith(StatusPolicyViolation, "binary frames are not supported: send JSON text frames")
			return
		}
		// Handle the request on a goroutine of its own: decoding and
		// subscribing need a deep stack, which the reader's goroutine
		// would keep (an idle connection's largest cost) until a
		// garbage collection shrinks it.
		handled := make(chan struct{})
		go func() {
			defer close(handled)
			if c.ph != nil {
				c.ph.handle(typ, data)
				return
			}
			c.handle(data)
		}()
		<-handled
		select {
		case <-c.done:
			return
		default:
		}
	}
}

// info describes the connection for /api/connections.
func (c *conn) info() connectionInfo {
	id := c.ident.Load()
	c.subMu.Lock()
	topics := make([]string, 0, len(c.subs))
	for _, s := range c.subs {
		topics = append(topics, s.topic)
	}
	c.subMu.Unlock()
	if c.ph != nil {
		topics = append(topics, c.ph.topics()...)
	}
	sort.Strings(topics)
	return connectionInfo{
		ID:            c.id,
		Subject:       id.Subject,
		Role:          id.Role,
		Anonymous:     id.Anonymous,
		Claims:        id.Claims,
		Subscriptions: topics,
		ConnectedAt:   c.connectedAt,
		RemoteAddr:    c.remote,
		Queued:        c.queued(),
	}
}
