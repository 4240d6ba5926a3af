package wsapi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/wsframe"
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
	w.cc = &corkConn{Conn: nc, timeout: w.timeout, raw: nonBlockingRaw(nc)}
	// net/http flushes the response before it hands the connection over;
	// flush anyway, to the socket itself.
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	// coder/websocket keeps the buffers it is given for the life of the
	// connection: net/http's are 4 KiB each, more than half of what an
	// idle connection costs. Give it small ones (the cork does the
	// coalescing of writes; client frames are small), keeping any bytes
	// the client sent after its request.
	pending, _ := brw.Reader.Peek(brw.Reader.Buffered())
	var r io.Reader = nc
	if len(pending) > 0 {
		r = io.MultiReader(bytes.NewReader(bytes.Clone(pending)), nc)
	}
	br := bufio.NewReaderSize(r, max(hijackReadBuf, len(pending)))
	if len(pending) > 0 {
		br.Peek(len(pending)) // into the buffer, where Accept looks for them
	}
	return w.cc, bufio.NewReadWriter(br, bufio.NewWriterSize(w.cc, hijackWriteBuf)), nil
}

// The read and write buffers of an upgraded connection. Frame headers are
// read through the reader (payloads of 64 bytes and more go straight into
// the message); a server control frame (2 + at most 125 bytes) fits the
// writer, so coder/websocket writes each one with one Write call, which
// writeText relies on.
const (
	hijackReadBuf  = 64
	hijackWriteBuf = 128
)

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
	raw     syscall.RawConn // for non-blocking writes (rawwrite_unix.go); nil: none
	timeout time.Duration
	// onTimeout is called (once per flush, under mu) when a flush misses
	// its deadline; the flush then gets one more timeout to finish, so
	// that the close frame onTimeout triggers can follow the frames
	// already written. Set before the connection is used.
	onTimeout func()

	// writing is set while a blocking write is in progress: the socket
	// did not take everything at once (read without mu, which the write
	// holds).
	writing atomic.Bool

	mu     sync.Mutex
	corked bool
	noData bool    // the close handshake started: no more data frames
	nb     bool    // corked by tryCork: writes never flush, the buffer grows
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
	// Every Write is one whole control frame (see hijackWriteBuf). A close
	// frame — whoever started the close: coder/websocket answers a peer's
	// close and protocol errors itself — is the last frame: no data after
	// it, and it goes out at once (the library may close the socket right
	// after writing it).
	if len(p) > 0 && p[0]&0x0f == 0x8 {
		c.noData = true
		if c.corked {
			if err := c.flushLocked(p); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	if !c.corked {
		return c.Conn.Write(p)
	}
	n := 0
	if c.buf != nil {
		n = len(*c.buf)
	}
	if n+len(p) > corkMax && !c.nb {
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
func (c *corkConn) flushLocked(extra ...[]byte) error {
	var bufs net.Buffers
	if c.buf != nil && len(*c.buf) > 0 {
		bufs = append(bufs, *c.buf)
	}
	for _, e := range extra {
		if len(e) > 0 {
			bufs = append(bufs, e)
		}
	}
	if len(bufs) == 0 {
		return nil
	}
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	c.writing.Store(true)
	_, err := bufs.WriteTo(c.Conn) // consumes what was written from bufs
	if err != nil && c.onTimeout != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.onTimeout()
		c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		_, err = bufs.WriteTo(c.Conn)
	}
	c.writing.Store(false)
	c.release()
	if err != nil {
		c.err = err // the deadline stays in the past: later writes fail at once
		return err
	}
	c.Conn.SetWriteDeadline(time.Time{})
	return nil
}

// release returns the buffer to the pool.
func (c *corkConn) release() {
	if c.buf != nil {
		b := c.buf
		c.buf = nil
		if cap(*b) <= 4*corkMax {
			*b = (*b)[:0]
			corkPool.Put(b)
		}
	}
}

// cork starts buffering writes, flushing with blocking writes whenever
// the buffer would pass corkMax. A nil corkConn (a conn made without an
// upgrade, in tests) does nothing.
func (c *corkConn) cork() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.corked, c.nb = true, false
	c.mu.Unlock()
}

// tryCork starts buffering writes without ever writing to the socket
// (the buffer grows past corkMax) and reports true, unless another
// goroutine is writing to the socket (or the socket has no raw access for
// non-blocking writes), in which case it does nothing and reports false.
func (c *corkConn) tryCork() bool {
	if c.raw == nil || !c.mu.TryLock() {
		return false
	}
	c.corked, c.nb = true, true
	c.mu.Unlock()
	return true
}

// tryUncork writes what was buffered with non-blocking writes. When the
// socket took everything it stops buffering and reports true; otherwise
// the rest stays buffered, still corked (for uncork, with blocking
// writes), and it reports false.
func (c *corkConn) tryUncork() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nb = false
	if c.err != nil {
		c.corked = false
		return false, c.err
	}
	if c.buf == nil || len(*c.buf) == 0 {
		c.corked = false
		c.release()
		return true, nil
	}
	b, err := writeNonBlocking(c.raw, *c.buf)
	if err != nil {
		c.corked = false
		c.err = err
		c.release()
		return false, err
	}
	if len(b) == 0 {
		c.corked = false
		c.release()
		return true, nil
	}
	n := copy(*c.buf, b)
	*c.buf = (*c.buf)[:n]
	return false, nil
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
	return c.flushLocked()
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

// writeText writes p as one unfragmented text frame (server frames are not
// masked). Data frames are written here rather than through
// coder/websocket's Conn.Write: the frame's bytes go into the cork buffer
// in one step, which costs a fraction of the library's per-message path
// (a message writer lock, a frame lock and a bufio pass per frame) when an
// event goes to thousands of sockets. The library still writes every
// control frame (ping, pong, close), each with one Write call (they fit
// its write buffer), so frames never interleave; stopData keeps data
// frames from following the close frame.
func (c *corkConn) writeText(p []byte) error {
	var hdr [wsframe.MaxHeader]byte
	h := wsframe.AppendHeader(hdr[:0], wsframe.OpText, len(p))
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return c.err
	case c.noData:
		return errClosing
	case !c.corked:
		return c.flushLocked(h, p)
	}
	n := 0
	if c.buf != nil {
		n = len(*c.buf)
	}
	if n+len(h)+len(p) > corkMax && !c.nb {
		return c.flushLocked(h, p)
	}
	if c.buf == nil {
		c.buf = corkPool.Get().(*[]byte)
	}
	*c.buf = append(append(*c.buf, h...), p...)
	return nil
}

// errClosing is writeText's error once the close handshake started.
var errClosing = errors.New("connection closing: no more data frames")

// stopData makes every later writeText fail with errClosing: called before the close
// frame is written.
func (c *corkConn) stopData() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.noData = true
	c.mu.Unlock()
}

// blocked reports whether a write to the socket is waiting for the peer
// to take data. A nil corkConn (no socket of its own, in tests) reports
// true: nothing contradicts it.
func (c *corkConn) blocked() bool { return c == nil || c.writing.Load() }
