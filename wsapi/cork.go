package wsapi

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// corkMax bounds what a corked connection holds before it writes: the
// writer's frames and any control frame written meanwhile by
// coder/websocket from another goroutine (pong, ping, close).
const corkMax = 64 << 10

// corkRW wraps the ResponseWriter of an upgrade so that the hijacked
// connection coder/websocket writes to is a corkConn.
type corkRW struct {
	http.ResponseWriter
	timeout time.Duration
	cc      *corkConn
}

func (w *corkRW) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.cc = &corkConn{Conn: nc, timeout: w.timeout}
	// Reuse the writer's buffer, pointed at the cork, so that every write
	// goes through it. (It is empty: net/http flushes the response before
	// it hands the connection over; flush anyway, to the socket itself.)
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	brw.Writer.Reset(w.cc)
	return w.cc, brw, nil
}

// corkConn is the hijacked connection of a WebSocket. While corked (the
// writer goroutine is draining its queue) writes are appended to a buffer;
// uncork writes the buffer with one write(2), under a write deadline of
// timeout (see onTimeout). The buffer never exceeds corkMax plus one write: a write that
// would overflow it flushes at once. Uncorked writes (control frames
// written by coder/websocket while the writer is idle) go straight
// through, as without the cork. Every write and flush happens under mu,
// so bytes reach the socket in the order they were written.
type corkConn struct {
	net.Conn
	timeout time.Duration
	// onTimeout is called (once per flush, under mu) when a flush misses
	// its deadline; the flush then gets one more timeout to finish, so
	// that the close frame onTimeout triggers can follow the frames
	// already written. Set before the connection is used.
	onTimeout func()

	mu     sync.Mutex
	corked bool
	buf    *[]byte // nil when empty; from corkPool
	err    error   // a failed flush: every later write fails with it
}

var corkPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.Conn.Write(p)
	}
	n := 0
	if c.buf != nil {
		n = len(*c.buf)
	}
	if n+len(p) > corkMax {
		if err := c.flushLocked(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if c.buf == nil {
		c.buf = corkPool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// flushLocked writes the buffer, then extra, under the write deadline.
func (c *corkConn) flushLocked(extra []byte) error {
	var bufs net.Buffers
	if c.buf != nil && len(*c.buf) > 0 {
		bufs = append(bufs, *c.buf)
	}
	if len(extra) > 0 {
		bufs = append(bufs, extra)
	}
	if len(bufs) == 0 {
		return nil
	}
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := bufs.WriteTo(c.Conn) // consumes what was written from bufs
	if err != nil && c.onTimeout != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.onTimeout()
		c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		_, err = bufs.WriteTo(c.Conn)
	}
	if c.buf != nil {
		b := c.buf
		c.buf = nil
		if cap(*b) <= 4*corkMax {
			*b = (*b)[:0]
			corkPool.Put(b)
		}
	}
	if err != nil {
		c.err = err // the deadline stays in the past: later writes fail at once
		return err
	}
	c.Conn.SetWriteDeadline(time.Time{})
	return nil
}

// cork starts buffering writes. A nil corkConn (a conn made without an
// upgrade, in tests) does nothing.
func (c *corkConn) cork() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what was buffered and stops buffering.
func (c *corkConn) uncork() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.err != nil {
		return c.err
	}
	return c.flushLocked(nil)
}

// buffered is the number of bytes waiting for uncork.
func (c *corkConn) buffered() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return 0
	}
	return len(*c.buf)
}
