package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/coder/websocket"
)

// Error is an error reply of the server (PROTOCOL section 3).
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Topic   string `json:"topic,omitempty"`
}

func (e *Error) Error() string {
	if e.Topic != "" {
		return fmt.Sprintf("pgrealtime: %s (%s): %s", e.Code, e.Topic, e.Message)
	}
	return fmt.Sprintf("pgrealtime: %s: %s", e.Code, e.Message)
}

// reply is a server frame that answers a request.
type reply struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	Position string `json:"position"`
	Error
	Revoked []string `json:"revoked"`
}

// session is one WebSocket connection.
type session struct {
	ws *websocket.Conn

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply

	closed   chan struct{} // the reader ended
	closeErr error         // why (set before closed is closed)
}

func newSession(ws *websocket.Conn) *session {
	return &session{ws: ws, pending: map[string]chan reply{}, closed: make(chan struct{})}
}

// request sends msg with a fresh id and waits for the reply with that id.
func (s *session) request(ctx context.Context, msg map[string]any) (reply, error) {
	s.mu.Lock()
	s.nextID++
	id := "c" + strconv.FormatUint(s.nextID, 10)
	ch := make(chan reply, 1)
	s.pending[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}()
	msg["id"] = id
	b, err := json.Marshal(msg)
	if err != nil {
		return reply{}, err
	}
	if err := s.ws.Write(ctx, websocket.MessageText, b); err != nil {
		return reply{}, fmt.Errorf("send %s: %w", msg["type"], err)
	}
	select {
	case r := <-ch:
		if r.Type == "error" {
			e := r.Error
			return r, &e
		}
		return r, nil
	case <-s.closed:
		return reply{}, fmt.Errorf("connection lost: %w", s.closeErr)
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

// read runs until the connection ends, routing events with route and
// replies to their requests. Frames that are neither go to other.
func (s *session) read(ctx context.Context, route func(*Event), other func(reply)) {
	defer close(s.closed)
	for {
		_, data, err := s.ws.Read(ctx)
		if err != nil {
			s.closeErr = err
			return
		}
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(data, &head) != nil {
			continue
		}
		switch head.Type {
		case TypeRecord, TypeCustom:
			var ev Event
			if json.Unmarshal(data, &ev) == nil {
				route(&ev)
			}
		case "connected":
		default:
			var r reply
			if json.Unmarshal(data, &r) != nil {
				continue
			}
			s.mu.Lock()
			ch := s.pending[r.ID]
			s.mu.Unlock()
			if ch != nil {
				ch <- r
			} else {
				other(r)
			}
		}
	}
}
