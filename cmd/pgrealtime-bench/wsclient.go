package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"
)

// httpClient dials loopback only, never through a proxy.
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:       nil,
	DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
}}

// wsClient is one WebSocket connection to pgrealtime, as a browser would
// hold it. It is used by one goroutine.
type wsClient struct {
	c   *websocket.Conn
	buf []byte
}

// dialClient connects with the token in the query string and reads the
// `connected` frame.
func dialClient(ctx context.Context, wsURL, token string) (*wsClient, error) {
	u := wsURL
	if token != "" {
		u += "?access_token=" + url.QueryEscape(token)
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: httpClient})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.SetReadLimit(1 << 20)
	cl := &wsClient{c: c}
	msg, err := cl.next(ctx)
	if err != nil {
		cl.close()
		return nil, fmt.Errorf("read connected frame: %w", err)
	}
	if t := jsonField(msg, "type"); string(t) != "connected" {
		cl.close()
		return nil, fmt.Errorf("first frame is %q, want connected: %s", t, msg)
	}
	return cl, nil
}

// subscribe sends a subscribe request and waits for its reply. Events that
// arrive before the reply (a replay) are passed to onEvent. It returns the
// reply's position.
func (cl *wsClient) subscribe(ctx context.Context, topics []string, since string, onEvent func(msg []byte, at time.Time)) (string, error) {
	req := map[string]any{"type": "subscribe", "id": "s1", "topics": topics}
	if since != "" {
		req["since"] = since
	}
	b, _ := json.Marshal(req)
	if err := cl.c.Write(ctx, websocket.MessageText, b); err != nil {
		return "", fmt.Errorf("send subscribe: %w", err)
	}
	for {
		msg, err := cl.next(ctx)
		if err != nil {
			return "", fmt.Errorf("await subscribed: %w", err)
		}
		at := time.Now()
		switch string(jsonField(msg, "type")) {
		case "subscribed":
			return string(jsonField(msg, "position")), nil
		case "error":
			return "", &protocolError{Code: string(jsonField(msg, "code")), Msg: string(msg)}
		case "record_event", "custom_event":
			if onEvent != nil {
				onEvent(msg, at)
			}
		}
	}
}

type protocolError struct{ Code, Msg string }

func (e *protocolError) Error() string { return "server replied " + e.Msg }

// next reads one message into the connection's reusable buffer; the bytes
// are valid until the next call.
func (cl *wsClient) next(ctx context.Context) ([]byte, error) {
	_, r, err := cl.c.Reader(ctx)
	if err != nil {
		return nil, err
	}
	if cl.buf == nil {
		cl.buf = make([]byte, 0, 1024)
	}
	b := cl.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	cl.buf = b
	return b, nil
}

func (cl *wsClient) close() { cl.c.CloseNow() }

// jsonField returns the raw string value of the first `"key":"…"` in msg
// (no unescaping: the benchmark's values never contain quotes), or nil.
// Record columns are named so that they never collide with the keys looked
// up here.
func jsonField(msg []byte, key string) []byte {
	var pat [64]byte
	p := append(append(append(pat[:0], '"'), key...), `":"`...)
	i := bytes.Index(msg, p)
	if i < 0 {
		return nil
	}
	rest := msg[i+len(p):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// eventLatency is receive time minus the event's commit timestamp.
func eventLatency(msg []byte, at time.Time) (time.Duration, bool) {
	ts := jsonField(msg, "timestamp")
	if ts == nil {
		return 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return 0, false
	}
	return at.Sub(t), true
}
