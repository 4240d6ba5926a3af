package wsapi

import (
	"runtime"
	"sync"
)

// Writing a connection's send queue.
//
// A connection has no goroutine of its own for writing. When something is
// queued on an idle connection, the connection is put on the server's
// ready list, which a few pool workers (at most GOMAXPROCS, started on
// demand, gone when the list is empty) serve in FIFO order. A worker
// corks the socket, copies the queued frames into the cork buffer and
// writes it with one non-blocking write(2): to 10 000 subscribers of one
// event that is 10 000 system calls from two goroutines, instead of
// waking 10 000 writer goroutines. A worker never waits on a socket: when
// the socket cannot take everything (a slow or stalled client), when the
// head of the queue is a large batch, or when another goroutine is in the
// middle of writing to the socket, the connection is handed to a flusher
// goroutine of its own, which writes with blocking, deadline-bounded
// writes (WriteTimeout, then 4008) until the queue is empty, and exits.
//
// Exactly one owner (a worker or the flusher) writes a connection at a
// time, so frames go out in queue order; owned (under qmu) says one has
// it. The owner lets go only when it finds the queue empty under qmu, so
// an item queued meanwhile is never left behind.

// Worker limits: a connection gets at most fastTurnBytes written per turn
// on a worker before it goes back to the end of the ready list; a batch
// of more than fastBatch events goes to the connection's flusher.
const (
	fastTurnBytes = corkMax
	fastBatch     = 64
	workerGrab    = 64 // connections taken from the ready list at once
)

// writePool is the server's ready list and its workers.
type writePool struct {
	mu      sync.Mutex
	ready   []*conn
	head    int
	workers int
}

// schedule puts c, just made owned, on the ready list, starting a worker
// when fewer than GOMAXPROCS run.
func (p *writePool) schedule(c *conn) {
	p.mu.Lock()
	p.ready = append(p.ready, c)
	start := p.workers < runtime.GOMAXPROCS(0)
	if start {
		p.workers++
	}
	p.mu.Unlock()
	if start {
		go p.work()
	}
}

func (p *writePool) work() {
	var batch [workerGrab]*conn
	for {
		p.mu.Lock()
		n := copy(batch[:], p.ready[p.head:])
		clear(p.ready[p.head : p.head+n])
		p.head += n
		if p.head == len(p.ready) {
			if cap(p.ready) > 1<<16 {
				p.ready = nil
			} else {
				p.ready = p.ready[:0]
			}
			p.head = 0
		}
		if n == 0 {
			p.workers--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		for i, c := range batch[:n] {
			c.serve()
			batch[i] = nil
		}
	}
}

// startWriting makes the connection live: what is queued (the connected
// message) and everything queued from now on gets written.
func (c *conn) startWriting() {
	c.qmu.Lock()
	c.live = true
	if !c.owned && c.qhead < len(c.q) {
		c.owned = true
		c.s.writers.schedule(c)
	}
	c.qmu.Unlock()
}

// letGo ends the owner's turn if the queue is empty (or the connection is
// closed); it reports whether it did. The owner must not touch the
// connection's writing state after letting go.
func (c *conn) letGo() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.qhead < len(c.q) && !c.closed {
		return false
	}
	c.owned = false
	if c.ownerGone != nil {
		close(c.ownerGone)
		c.ownerGone = nil
	}
	return true
}

// abandon ends the owner's turn after a failed write: the socket is being
// dropped, nothing more is queued or written.
func (c *conn) abandon() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.closed = true
	c.owned = false
	if c.ownerGone != nil {
		close(c.ownerGone)
		c.ownerGone = nil
	}
}

// waitWriter waits until no owner writes the connection (it is closed, so
// none will again).
func (c *conn) waitWriter() {
	c.qmu.Lock()
	if !c.owned {
		c.qmu.Unlock()
		return
	}
	if c.ownerGone == nil {
		c.ownerGone = make(chan struct{})
	}
	ch := c.ownerGone
	c.qmu.Unlock()
	<-ch
}

// popFast takes the first item of the queue unless it is a batch too big
// for a worker (then big is true and the item stays queued).
func (c *conn) popFast() (it item, ok, big bool) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.qhead < len(c.q) && len(c.q[c.qhead].evs) > fastBatch {
		return item{}, false, true
	}
	it, ok = c.popLocked()
	return it, ok, false
}

func (c *conn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// serve is a worker's turn on c, which it owns: write what is queued
// without ever waiting on the socket; hand c to its flusher goroutine
// when that is not possible.
func (c *conn) serve() {
	if c.cork == nil || !c.cork.tryCork() {
		go c.flusher()
		return
	}
	handOff, failed := false, false
	for !c.isDone() && c.cork.buffered() < fastTurnBytes {
		it, ok, big := c.popFast()
		if big {
			handOff = true
			break
		}
		if !ok {
			break
		}
		if !c.write(it) {
			failed = true // dropped, or the close frame is out: no more data
			break
		}
	}
	complete, err := c.cork.tryUncork()
	switch {
	case err != nil:
		c.writeFailed(err)
		c.abandon()
	case failed:
		c.abandon()
	case !complete, handOff:
		// The rest of the buffer (still corked) and of the queue go
		// with blocking, deadline-bounded writes.
		go c.flusher()
	case c.letGo():
	default: // more was queued meanwhile: back to the end of the list
		c.s.writers.schedule(c)
	}
}

// flusher writes c, which it owns, with blocking writes until its queue is
// empty (or the connection closes), then lets go.
func (c *conn) flusher() {
	for {
		if !c.drain() {
			c.abandon() // a failed write, or closing
			return
		}
		if c.letGo() {
			return
		}
	}
}

// drain writes every queued item, including those queued meanwhile, with
// the socket corked: the frames are written with one write(2) per corkMax
// bytes (plus one at the end) instead of one per frame. Control frames
// that coder/websocket writes from other goroutines during the drain
// (pong, ping, close) are buffered in order with the frames and flushed
// with them. Each flush has a deadline of WriteTimeout. It reports
// whether writing may go on.
func (c *conn) drain() bool {
	c.cork.cork()
	ok := true
	for ok && !c.isDone() {
		it, more := c.pop()
		if !more {
			break
		}
		ok = c.write(it)
	}
	// Flush even when closing: what was buffered (a close frame included)
	// goes out in order.
	if err := c.cork.uncork(); err != nil {
		c.writeFailed(err)
		return false
	}
	return ok && !c.isDone()
}
