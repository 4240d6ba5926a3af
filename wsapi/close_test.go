package wsapi

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

func maskedText(p []byte) []byte {
	b := []byte{0x81}
	if len(p) < 126 {
		b = append(b, 0x80|byte(len(p)))
	} else {
		b = append(b, 0x80|126, byte(len(p)>>8), byte(len(p)))
	}
	key := []byte{1, 2, 3, 4}
	b = append(b, key...)
	for i, c := range p {
		b = append(b, c^key[i%4])
	}
	return b
}

// After a close frame that coder/websocket writes itself (here: the 1002
// for a client frame with a reserved bit set), no data frame may follow.
func TestNoDataAfterLibraryClose(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.SendQueue = 1000000 }})
	tok := adminToken(t)
	addr := strings.TrimPrefix(e.hs.URL, "http://")
	var stop atomic.Bool
	go func() {
		for i := 0; !stop.Load(); i++ {
			lsn := e.lsn.Add(0x100)
			ev := rec("t", "create", fmt.Sprint(i))
			ev.Position = broker.Position{LSN: lsn, Index: 1}
			ev.Timestamp = time.Now()
			if e.broker.Append(e.ctx, &broker.Tx{CommitLSN: lsn, EndLSN: lsn + 0x10, CommitTime: time.Now(), Events: []*broker.Event{ev}}) != nil {
				return
			}
			if i%16 == 0 {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	defer stop.Store(true)
	bad := 0
	for round := 0; round < 40 && bad == 0; round++ {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(nc, "GET /realtime HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", addr, tok)
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		nc.Write(maskedText([]byte(`{"type":"subscribe","topics":["t"]}`)))
		type frame struct {
			op byte
			p  string
		}
		frames := make(chan frame, 1<<20)
		go func() {
			defer close(frames)
			var h [8]byte
			for {
				nc.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := io.ReadFull(br, h[:2]); err != nil {
					return
				}
				op := h[0] & 0x0f
				n := int(h[1] & 0x7f)
				switch n {
				case 126:
					io.ReadFull(br, h[:2])
					n = int(binary.BigEndian.Uint16(h[:2]))
				case 127:
					io.ReadFull(br, h[:8])
					n = int(binary.BigEndian.Uint64(h[:8]))
				}
				p := make([]byte, n)
				if _, err := io.ReadFull(br, p); err != nil {
					return
				}
				frames <- frame{op, string(p)}
				_ = op
			}
		}()
		// Wait for events to flow, then send a frame with RSV2 set.
		got := 0
		for f := range frames {
			if f.op == 1 && strings.Contains(f.p, "record_event") {
				got++
			}
			if got == 50 {
				break
			}
		}
		nc.Write([]byte{0xA1, 0x80, 1, 2, 3, 4})
		sawClose := false
		deadline := time.After(500 * time.Millisecond)
	loop:
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					break loop
				}
				if f.op == 8 {
					sawClose = true
					t.Logf("round %d: close frame %d %q", round, binary.BigEndian.Uint16([]byte(f.p)), f.p[2:])
				} else if sawClose && f.op == 1 {
					bad++
					t.Logf("round %d: data frame after the close frame: %.80s", round, f.p)
				}
			case <-deadline:
				break loop
			}
		}
		nc.Close()
	}
	if bad > 0 {
		t.Fatalf("%d data frames after a close frame", bad)
	}
}
