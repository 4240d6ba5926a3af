package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/wsframe"
)

// The fan-out floor: `pgrealtime-bench floor` is the least a WebSocket
// server can do per delivery on this machine — a bare handshake, then one
// write(2) of a prebuilt frame per subscriber per event from GOMAXPROCS
// goroutines, with no WebSocket library, no queue, no rules and no
// Postgres. The same client process measures it as it measures pgrealtime,
// so the two fan-out tables show what the machine allows and how close
// pgrealtime gets to it.
//
//	child → parent: {"event":"listening","addr":"127.0.0.1:PORT"}
//	parent → child: publish RATE SECONDS | quit
//	child → parent (after publish): {"event":"published","n":N}

func runFloor(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseFileLimit()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	f := &floor{}
	hs := &http.Server{Handler: http.HandlerFunc(f.serve)}
	go hs.Serve(ln)
	defer hs.Close()
	out := json.NewEncoder(stdout)
	if err := out.Encode(map[string]string{"event": "listening", "addr": ln.Addr().String()}); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 3 && fields[0] == "publish":
			rate, err1 := strconv.Atoi(fields[1])
			secs, err2 := strconv.ParseFloat(fields[2], 64)
			if err1 != nil || err2 != nil || rate < 1 {
				return fmt.Errorf("floor: bad command %q", sc.Text())
			}
			n := f.publish(ctx, rate, time.Duration(secs*float64(time.Second)))
			out.Encode(map[string]any{"event": "published", "n": n})
		case len(fields) == 1 && fields[0] == "quit":
			return nil
		default:
			return fmt.Errorf("floor: unknown command %q", sc.Text())
		}
	}
	return sc.Err()
}

type floor struct {
	mu   sync.Mutex
	subs []net.Conn
	seq  int
}

// serve does the opening handshake by hand (RFC 6455 section 4.2), sends
// the connected message, answers the first client message (the subscribe)
// and adds the connection to the subscribers; further client frames are
// read and dropped.
func (f *floor) serve(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "websocket only", http.StatusBadRequest)
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	brw.Write(textFrame([]byte(`{"type":"connected","connection_id":"floor"}`)))
	if brw.Flush() != nil {
		nc.Close()
		return
	}
	go func() {
		defer nc.Close()
		first := true
		for {
			op, _, err := readClientFrame(brw.Reader)
			if err != nil || op == 0x8 {
				return
			}
			if first && op == 0x1 {
				first = false
				f.mu.Lock()
				_, err := nc.Write(textFrame([]byte(`{"type":"subscribed","id":"s1","topics":["bench.*"]}`)))
				if err == nil {
					f.subs = append(f.subs, nc)
				}
				f.mu.Unlock()
			}
		}
	}()
}

// publish sends rate events per second for d, each to every subscriber,
// and returns how many events it sent.
func (f *floor) publish(ctx context.Context, rate int, d time.Duration) int {
	f.mu.Lock()
	subs := append([]net.Conn(nil), f.subs...)
	f.mu.Unlock()
	workers := runtime.GOMAXPROCS(0)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	n := 0
	for ; ctx.Err() == nil; n++ {
		due := start.Add(time.Duration(n) * interval)
		if due.Sub(start) >= d {
			break
		}
		time.Sleep(time.Until(due))
		f.seq++
		now := time.Now().UTC()
		frame := textFrame(fmt.Appendf(nil,
			`{"type":"record_event","collection":"bench","action":"create","record_id":"%d","record":{"id":%d,"v":%d,"note":"live row"},"timestamp":"%s","position":"0/%X:1"}`,
			f.seq, f.seq, f.seq, now.Format(time.RFC3339Nano), 0x1000000+f.seq))
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(part []net.Conn) {
				defer wg.Done()
				for _, c := range part {
					c.Write(frame)
				}
			}(subs[len(subs)*w/workers : len(subs)*(w+1)/workers])
		}
		wg.Wait()
	}
	time.Sleep(time.Until(start.Add(d))) // a step lasts d, as with the paced inserts
	return n
}

// textFrame is an unmasked, unfragmented server text frame, encoded as
// pgrealtime encodes its own.
func textFrame(p []byte) []byte { return wsframe.AppendText(nil, p) }

// readClientFrame reads one masked client frame and returns its opcode and
// unmasked payload.
func readClientFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return 0, nil, errors.New("client frame too large")
	}
	var mask [4]byte
	if h[1]&0x80 != 0 {
		if _, err := io.ReadFull(r, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	for i := range p {
		p[i] ^= mask[i%4]
	}
	return h[0] & 0x0F, p, nil
}

// floorProc is the parent's handle on a `floor` child process.
type floorProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	Addr string
	done chan struct{}
}

func startFloor(ctx context.Context, self string) (*floorProc, error) {
	p := &floorProc{done: make(chan struct{})}
	p.cmd = exec.Command(self, "floor")
	p.cmd.Stderr = os.Stderr
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewReader(stdout)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start floor process: %w", err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	var m struct{ Addr string }
	if err := p.read(ctx, 30*time.Second, &m); err != nil {
		p.kill()
		return nil, fmt.Errorf("floor process: %w", err)
	}
	p.Addr = m.Addr
	return p, nil
}

func (p *floorProc) read(ctx context.Context, timeout time.Duration, v any) error {
	ch := make(chan error, 1)
	go func() {
		line, err := p.out.ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, v)
		}
		ch <- err
	}()
	select {
	case err := <-ch:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("no answer within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publish runs one step on the floor server and returns the events sent.
func (p *floorProc) publish(ctx context.Context, rate int, d time.Duration) (int, error) {
	if _, err := fmt.Fprintf(p.in, "publish %d %g\n", rate, d.Seconds()); err != nil {
		return 0, err
	}
	var m struct{ N int }
	err := p.read(ctx, d+time.Minute, &m)
	return m.N, err
}

func (p *floorProc) URL() string { return "ws://" + p.Addr + "/realtime" }
func (p *floorProc) Pid() int    { return p.cmd.Process.Pid }

func (p *floorProc) quit() { quitChild(p.cmd, p.in, p.done, 10*time.Second) }
func (p *floorProc) kill() { killChild(p.cmd, p.done) }
