package wsapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
)

// The conformance of the hand-written frame path (cork.go writes data
// frames beside coder/websocket, which writes the control frames): the raw
// bytes the server sends, captured under mixed concurrent traffic, parsed
// by the independent RFC 6455 parser below.

// tapConn records every byte read from and written to a connection.
type tapConn struct {
	net.Conn
	mu      sync.Mutex
	in, out bytes.Buffer
	// Server pings seen so far: frames of the read stream are followed
	// as they arrive (from parsed on), after the HTTP response.
	pings  atomic.Int64
	parsed int
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in.Write(p[:n])
	b := c.in.Bytes()
	if c.parsed == 0 {
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			c.parsed = i + 4
		}
	}
	for c.parsed > 0 && len(b)-c.parsed >= 2 {
		h, n := b[c.parsed:], uint64(b[c.parsed+1]&0x7F)
		hl := 2
		switch {
		case n == 126 && len(h) >= 4:
			n, hl = uint64(binary.BigEndian.Uint16(h[2:])), 4
		case n == 127 && len(h) >= 10:
			n, hl = binary.BigEndian.Uint64(h[2:]), 10
		case n >= 126:
			n = 1 << 62 // header incomplete
		}
		if uint64(len(h)) < uint64(hl)+n {
			break
		}
		if h[0]&0x0F == 0x9 {
			c.pings.Add(1)
		}
		c.parsed += hl + int(n)
	}
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.out.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) streams() (in, out []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.in.Bytes()), bytes.Clone(c.out.Bytes())
}

// rfcFrame is one frame as RFC 6455 section 5.2 lays it out.
type rfcFrame struct {
	fin     bool
	rsv     byte
	op      byte
	masked  bool
	payload []byte // unmasked
	at      int    // offset in the stream
}

// parseRFCFrames parses a whole stream of frames. It fails on a truncated
// frame, on a length not in its shortest form or with the most
// significant bit set, and on a control frame longer than 125 bytes or
// fragmented.
func parseRFCFrames(b []byte) ([]rfcFrame, error) {
	var out []rfcFrame
	for off := 0; off < len(b); {
		if len(b)-off < 2 {
			return out, fmt.Errorf("offset %d: %d bytes left, a frame header has at least 2", off, len(b)-off)
		}
		f := rfcFrame{fin: b[off]&0x80 != 0, rsv: b[off] >> 4 & 0x7, op: b[off] & 0xF, masked: b[off+1]&0x80 != 0, at: off}
		n := uint64(b[off+1] & 0x7F)
		p := off + 2
		switch n {
		case 126:
			if len(b) < p+2 {
				return out, fmt.Errorf("offset %d: truncated 16-bit length", off)
			}
			n = uint64(binary.BigEndian.Uint16(b[p:]))
			p += 2
			if n < 126 {
				return out, fmt.Errorf("offset %d: length %d in 16 bits, not the shortest form", off, n)
			}
		case 127:
			if len(b) < p+8 {
				return out, fmt.Errorf("offset %d: truncated 64-bit length", off)
			}
			n = binary.BigEndian.Uint64(b[p:])
			p += 8
			if n>>63 != 0 || n <= 0xFFFF {
				return out, fmt.Errorf("offset %d: length %d in 64 bits: most significant bit set or not the shortest form", off, n)
			}
		}
		var mask []byte
		if f.masked {
			if len(b) < p+4 {
				return out, fmt.Errorf("offset %d: truncated mask", off)
			}
			mask = b[p : p+4]
			p += 4
		}
		if uint64(len(b)-p) < n {
			return out, fmt.Errorf("offset %d: payload of %d bytes, %d left in the stream", off, n, len(b)-p)
		}
		f.payload = bytes.Clone(b[p : p+int(n)])
		for i := range f.payload {
			if mask != nil {
				f.payload[i] ^= mask[i%4]
			}
		}
		if f.op >= 0x8 && (n > 125 || !f.fin) {
			return out, fmt.Errorf("offset %d: control frame %#x of %d bytes, fin %v", off, f.op, n, f.fin)
		}
		out = append(out, f)
		off = p + int(n)
	}
	return out, nil
}

// afterHandshake returns the stream after the HTTP response (or request).
func afterHandshake(t *testing.T, b []byte) []byte {
	t.Helper()
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("no end of the HTTP headers in %.200q", b)
	}
	return b[i+4:]
}

func TestFramesConformance(t *testing.T) {
	e := newEnv(t, envOpts{timeout: 5 * time.Minute, cfg: func(c *Config) {
		c.PingInterval = 2 * time.Second // server pings throughout (and waits as long for the pong)
		c.SubscribeRate = 1000
	}})
	tok := adminToken(t)
	var tap *tapConn
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tap = &tapConn{Conn: nc}
		return tap, nil
	}}}
	ws, _, err := websocket.Dial(e.ctx, e.wsURL, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	c := e.wrap(ws)
	c.sub("big")

	// The events: every length class of a frame, at its edges, 0 B to
	// 1 MiB of payload. base is the length of an event's frame without
	// its blob (fixed: same id width, same timestamp).
	ts := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	event := func(i, size int) *rfcEvent {
		ev := rec("big", "create", fmt.Sprint(100000+i), "blob", strings.Repeat("x", size))
		ev.Timestamp = ts
		return &rfcEvent{ev: ev, size: size}
	}
	first := event(0, 0)
	e.publish(first.ev)
	base := len(first.ev.JSON)
	sizes := []int{1, 2, 7, 100, 1000, 4096, 70000, 300000}
	for _, n := range []int{125, 126, 127, 0xFFFF, 0x10000, 0x10001, 1 << 20} {
		if n >= base {
			sizes = append(sizes, n-base)
		}
	}
	evs := []*rfcEvent{first}
	var evMu sync.Mutex // evs, appended to by the publisher

	// The reader: reads everything (answering the server's pings) and
	// counts the replies.
	var (
		rmu     sync.Mutex
		replies = map[string]int{}
		got     []string // one per event
	)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.ws.Read(e.ctx)
			if err != nil {
				readErr <- err
				return
			}
			if bytes.HasPrefix(b, []byte(`{"type":"record_event"`)) {
				// Big: not decoded here (the client must read fast
				// enough to answer the server's pings in time); the
				// frames are checked below.
				rmu.Lock()
				got = append(got, "")
				rmu.Unlock()
				continue
			}
			var m msg
			if err := json.Unmarshal(b, &m); err != nil {
				readErr <- fmt.Errorf("frame is not JSON: %.100s", b)
				return
			}
			rmu.Lock()
			replies[m.str("type")+" "+m.str("code")]++
			rmu.Unlock()
		}
	}()

	// Concurrently: the events, client pings, requests that get replies
	// and errors, auth.
	const requests = 40
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		// Rounds of every size until the server has pinged twice
		// in the middle of them; each round once the client has read the
		// one before (a ping behind megabytes of events would wait too
		// long for its pong).
		defer wg.Done()
		for round := 1; round < 100 && (round <= 3 || tap.pings.Load() < 2); round++ {
			e.waitFor("the client to read the round before", func() bool {
				rmu.Lock()
				defer rmu.Unlock()
				evMu.Lock()
				defer evMu.Unlock()
				return len(got) == len(evs)
			})
			for i, n := range sizes {
				ev := event(round*100+i, n)
				evMu.Lock()
				evs = append(evs, ev)
				evMu.Unlock()
				e.publish(ev.ev)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
			err := c.ws.Ping(ctx)
			cancel()
			if err != nil {
				t.Errorf("client ping: %v", err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < requests; i++ {
			var r any
			switch i % 4 {
			case 0:
				r = msg{"type": "ping", "id": fmt.Sprint(i)}
			case 1:
				r = msg{"type": "subscribe", "id": fmt.Sprint(i), "topics": []string{"bad topic!"}}
			case 2:
				r = msg{"type": "auth", "id": fmt.Sprint(i), "token": tok}
			case 3:
				r = msg{"type": "subscribe", "id": fmt.Sprint(i), "topics": []string{fmt.Sprintf("t%d", i)}}
			}
			b, _ := json.Marshal(r)
			if err := c.ws.Write(e.ctx, websocket.MessageText, b); err != nil {
				t.Errorf("request: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	e.waitFor("every event and reply", func() bool {
		select {
		case err := <-readErr:
			t.Fatalf("client read: %v", err)
		default:
		}
		rmu.Lock()
		defer rmu.Unlock()
		n := 0
		for _, v := range replies {
			n += v
		}
		evMu.Lock()
		defer evMu.Unlock()
		return len(got) == len(evs) && n == requests
	})

	// The close, with a reason of 123 bytes (the most a close frame holds):
	// the server echoes it.
	// Events keep coming during the close: none may follow the close
	// frame.
	var late []*broker.Event
	stop := make(chan struct{})
	lateDone := make(chan struct{})
	go func() {
		defer close(lateDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			late = append(late, e.publish(rec("big", "update", fmt.Sprint(i), "blob", "late"))...)
		}
	}()
	reason := strings.Repeat("r", 123)
	if err := c.ws.Close(4000, reason); err != nil {
		t.Fatalf("close: %v", err)
	}
	<-readErr
	close(stop)
	<-lateDone
	in, out := tap.streams()

	// The server's stream: every frame whole, final, unmasked, not
	// reserved; text frames are JSON (an interleaved frame would break
	// one); the close frame is the last byte.
	frames, err := parseRFCFrames(afterHandshake(t, in))
	if err != nil {
		t.Fatalf("server stream: %v", err)
	}
	var (
		texts  []rfcFrame
		pongs  [][]byte
		closeF *rfcFrame
		class  = map[string]int{}
	)
	for i, f := range frames {
		if !f.fin || f.rsv != 0 || f.masked {
			t.Errorf("frame %d at %d: fin %v, rsv %d, masked %v: want final, not reserved, unmasked", i, f.at, f.fin, f.rsv, f.masked)
		}
		if closeF != nil {
			t.Fatalf("frame %d (opcode %#x) at %d after the close frame", i, f.op, f.at)
		}
		switch f.op {
		case 0x1:
			if !utf8.Valid(f.payload) || !json.Valid(f.payload) {
				t.Fatalf("text frame %d at %d is not JSON: %.100q", i, f.at, f.payload)
			}
			texts = append(texts, f)
			switch n := len(f.payload); {
			case n < 126:
				class["7-bit"]++
			case n <= 0xFFFF:
				class["16-bit"]++
			default:
				class["64-bit"]++
			}
		case 0x8:
			closeF = &frames[i]
		case 0x9:
		case 0xA:
			pongs = append(pongs, f.payload)
		default:
			t.Fatalf("frame %d at %d: opcode %#x from the server", i, f.at, f.op)
		}
	}
	if len(class) != 3 {
		t.Errorf("frames by length encoding %v: want all three", class)
	}
	if closeF == nil {
		t.Fatal("no close frame")
	}
	if len(closeF.payload) != 125 || binary.BigEndian.Uint16(closeF.payload) != 4000 || string(closeF.payload[2:]) != reason {
		t.Errorf("close frame: %q, want 4000 and the 123-byte reason", closeF.payload)
	}
	if countOp(frames, 0x9) == 0 {
		t.Error("no server ping")
	}
	// Events in order, each frame exactly its event's bytes.
	var evFrames [][]byte
	for _, f := range texts {
		if bytes.HasPrefix(f.payload, []byte(`{"type":"record_event"`)) {
			evFrames = append(evFrames, f.payload)
		}
	}
	if len(evFrames) < len(evs) || len(evFrames) > len(evs)+len(late) {
		t.Fatalf("%d event frames, want %d and up to %d published during the close", len(evFrames), len(evs), len(late))
	}
	for i, f := range evFrames[len(evs):] {
		if !bytes.Equal(f, late[i].JSON) {
			t.Fatalf("event frame %d during the close: %.80q, want %.80q", len(evs)+i, f, late[i].JSON)
		}
	}
	for i, ev := range evs {
		if len(ev.ev.JSON) != base+ev.size {
			t.Fatalf("event %d: %d bytes, want %d (base %d + blob %d)", i, len(ev.ev.JSON), base+ev.size, base, ev.size)
		}
		if !bytes.Equal(evFrames[i], ev.ev.JSON) {
			t.Fatalf("event frame %d: %d bytes %.80q, want event %d of %d bytes", i, len(evFrames[i]), evFrames[i], i, len(ev.ev.JSON))
		}
	}
	if len(texts)-len(evFrames) < requests+2 { // connected, subscribed, the replies
		t.Errorf("%d reply frames, want at least %d", len(texts)-len(evFrames), requests+2)
	}

	// The client's stream: masked frames; every server pong answers a
	// client ping, every server ping got its pong.
	cframes, err := parseRFCFrames(afterHandshake(t, out))
	if err != nil {
		t.Fatalf("client stream: %v", err)
	}
	clientPings := map[string]bool{}
	clientPongs := map[string]bool{}
	for _, f := range cframes {
		if !f.masked {
			t.Errorf("client frame at %d not masked", f.at)
		}
		switch f.op {
		case 0x9:
			clientPings[string(f.payload)] = true
		case 0xA:
			clientPongs[string(f.payload)] = true
		}
	}
	for _, p := range pongs {
		if !clientPings[string(p)] {
			t.Errorf("server pong %q answers no client ping", p)
		}
	}
	if len(pongs) != 50 {
		t.Errorf("%d server pongs for 50 client pings", len(pongs))
	}
	answered := 0
	for _, f := range frames {
		if f.op == 0x9 && clientPongs[string(f.payload)] {
			answered++
		}
	}
	t.Logf("%d of %d events published during the close reached the client before the close frame", len(evFrames)-len(evs), len(late))
	t.Logf("%d server frames (%d text, %v, %d pings of which %d answered, %d pongs), %d client frames",
		len(frames), len(texts), class, countOp(frames, 0x9), answered, len(pongs), len(cframes))
}

// rfcEvent is an event of the conformance test with its blob's size.
// countOp counts the frames with opcode op.
func countOp(frames []rfcFrame, op byte) int {
	n := 0
	for _, f := range frames {
		if f.op == op {
			n++
		}
	}
	return n
}

type rfcEvent struct {
	ev   *broker.Event
	size int
}
