package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// frame is one server frame of /realtime, the fields used here.
type frame struct {
	Type       string          `json:"type"`
	ID         string          `json:"id"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	Collection string          `json:"collection"`
	Position   string          `json:"position"`
	Record     json.RawMessage `json:"record"`
}

// resumeRaw subscribes to posts with since on node i over a plain
// WebSocket (the protocol itself, no client library) and returns the
// error code when the subscribe is refused, else the seqs of the record
// events it receives until one at or above until.
func (e *env) resumeRaw(ctx context.Context, i int, since string, until int64) (string, []int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h := http.Header{"Authorization": {"Bearer " + e.user}}
	ws, _, err := websocket.Dial(ctx, "ws://"+e.c.Nodes[i].Addr+"/realtime", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return "", nil, err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1)
	req, _ := json.Marshal(map[string]any{"type": "subscribe", "id": "late", "topics": []string{"posts"}, "since": since})
	if err := ws.Write(ctx, websocket.MessageText, req); err != nil {
		return "", nil, err
	}
	var seqs []int64
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return "", seqs, fmt.Errorf("after %d events: %w", len(seqs), err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			return "", seqs, fmt.Errorf("frame %q: %w", b, err)
		}
		switch {
		case f.Type == "error" && f.ID == "late":
			return f.Code, seqs, nil
		case f.Type == "record_event":
			var row struct {
				Seq int64 `json:"seq"`
			}
			if err := json.Unmarshal(f.Record, &row); err != nil {
				return "", seqs, err
			}
			seqs = append(seqs, row.Seq)
			if row.Seq >= until {
				return "", seqs, nil
			}
		}
	}
}
