package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// blackholeProxy is a loopback TCP proxy in front of Postgres that can turn
// into a dead path: Blackhole makes every connection it carries stop
// forwarding bytes in both directions, without closing either socket (what a
// NAT or firewall that dropped its state does, or a failed-over host).
// Restore makes connections accepted from then on work again; the
// blackholed ones stay dead until the proxy is closed.
type blackholeProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	gen   int // connections of an older generation are dead
	dead  bool
	conns []net.Conn
	wg    sync.WaitGroup
	// dropped counts the bytes swallowed by dead connections.
	dropped atomic.Int64
}

func newBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{t: t, ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *blackholeProxy) Addr() string { return p.ln.Addr().String() }

// Blackhole stops forwarding on every connection, open or accepted later
// (until Restore).
func (p *blackholeProxy) Blackhole() {
	p.mu.Lock()
	p.gen++
	p.dead = true
	p.mu.Unlock()
}

// Restore forwards connections accepted from now on; the blackholed ones
// stay dead.
func (p *blackholeProxy) Restore() {
	p.mu.Lock()
	p.dead = false
	p.mu.Unlock()
}

// alive reports whether a connection of generation gen still forwards.
func (p *blackholeProxy) alive(gen int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return gen == p.gen && !p.dead
}

func (p *blackholeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		gen := p.gen
		if p.dead {
			gen = -1 // accepted into the black hole: never forwards
		}
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c, gen)
		go p.pipe(c, up, gen)
	}
}

// pipe copies src to dst while the connection is alive; once it is not,
// it keeps reading (so the sender sees no error and no back-pressure, as on
// a path that silently drops packets) and discards. It closes nothing but
// on the proxy's close or a real end of src.
func (p *blackholeProxy) pipe(dst, src net.Conn, gen int) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if p.alive(gen) {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			} else {
				p.dropped.Add(int64(n))
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && p.alive(gen) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

func (p *blackholeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
