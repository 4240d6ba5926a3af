// Package phoenix is the wire format of Phoenix channels as Supabase
// Realtime clients speak it (PROTOCOL.md section 9): decoding client frames
// of both serializers, encoding server messages, and the postgres_changes
// and broadcast payloads built from broker events.
//
// Guarantees:
//   - Decode never panics; a frame it cannot use gives an error that says
//     what is wrong with it (and what was expected).
//   - Serializer 1.0.0 frames are JSON objects {topic, event, payload, ref,
//     join_ref}; 2.0.0 frames are JSON arrays [join_ref, ref, topic, event,
//     payload], and a client broadcast may come as a binary "user broadcast
//     push" frame (DecodeBinary).
//   - Encoders append to a caller's buffer and produce valid JSON for any
//     input; the event payloads (ChangeData, BroadcastData) depend on the
//     event alone, so they are encoded once per event and shared.
package phoenix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Vsn is a serializer version (the vsn query parameter).
type Vsn uint8

// Serializer versions.
const (
	V1 Vsn = 1 // "1.0.0": JSON objects
	V2 Vsn = 2 // "2.0.0": JSON arrays (and binary broadcast pushes)
)

// ParseVsn parses the vsn query parameter; empty means 1.0.0, as in Phoenix.
func ParseVsn(s string) (Vsn, error) {
	switch s {
	case "", "1.0.0":
		return V1, nil
	case "2.0.0":
		return V2, nil
	}
	return 0, fmt.Errorf("unsupported serializer vsn %q: use 1.0.0 or 2.0.0", s)
}

// String returns "1.0.0" or "2.0.0".
func (v Vsn) String() string {
	if v == V2 {
		return "2.0.0"
	}
	return "1.0.0"
}

// Events of the Phoenix protocol and of Supabase Realtime.
const (
	EventJoin            = "phx_join"
	EventLeave           = "phx_leave"
	EventClose           = "phx_close"
	EventError           = "phx_error"
	EventReply           = "phx_reply"
	EventHeartbeat       = "heartbeat"
	EventAccessToken     = "access_token"
	EventBroadcast       = "broadcast"
	EventPresence        = "presence"
	EventPresenceState   = "presence_state"
	EventPostgresChanges = "postgres_changes"
	EventSystem          = "system"
	// TopicPhoenix is the topic of heartbeats.
	TopicPhoenix = "phoenix"
)

// Message is one decoded client frame. JoinRef and Ref are nil when the
// frame has null (or no) refs.
type Message struct {
	JoinRef *string
	Ref     *string
	Topic   string
	Event   string
	Payload json.RawMessage // a JSON object (never empty)
}

// ErrFrame is wrapped by every Decode error.
var ErrFrame = errors.New("bad frame")

func frameErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFrame, fmt.Sprintf(format, args...))
}

// Decode parses a text frame of serializer v.
func Decode(v Vsn, data []byte) (*Message, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, frameErr("empty frame")
	}
	var (
		m                 Message
		joinRef, ref      json.RawMessage
		topic, event, pay json.RawMessage
	)
	if v == V2 {
		if data[0] != '[' {
			return nil, frameErr("serializer 2.0.0 frames are JSON arrays [join_ref, ref, topic, event, payload]")
		}
		var arr []json.RawMessage
		if err := json.Unmarshal(data, &arr); err != nil {
			return nil, frameErr("not a JSON array: %v", err)
		}
		if len(arr) != 5 {
			return nil, frameErr("array has %d elements; want 5: [join_ref, ref, topic, event, payload]", len(arr))
		}
		joinRef, ref, topic, event, pay = arr[0], arr[1], arr[2], arr[3], arr[4]
	} else {
		if data[0] != '{' {
			return nil, frameErr("serializer 1.0.0 frames are JSON objects {topic, event, payload, ref, join_ref}")
		}
		var obj struct {
			Topic   json.RawMessage `json:"topic"`
			Event   json.RawMessage `json:"event"`
			Payload json.RawMessage `json:"payload"`
			Ref     json.RawMessage `json:"ref"`
			JoinRef json.RawMessage `json:"join_ref"`
		}
		if err := json.Unmarshal(data, &obj); err != nil {
			return nil, frameErr("not a JSON object: %v", err)
		}
		joinRef, ref, topic, event, pay = obj.JoinRef, obj.Ref, obj.Topic, obj.Event, obj.Payload
	}
	var err error
	if m.JoinRef, err = decodeRef(joinRef, "join_ref"); err != nil {
		return nil, err
	}
	if m.Ref, err = decodeRef(ref, "ref"); err != nil {
		return nil, err
	}
	if m.Topic, err = decodeName(topic, "topic"); err != nil {
		return nil, err
	}
	if m.Event, err = decodeName(event, "event"); err != nil {
		return nil, err
	}
	pay = bytes.TrimSpace(pay)
	switch {
	case len(pay) == 0 || string(pay) == "null":
		m.Payload = json.RawMessage("{}")
	case pay[0] != '{':
		return nil, frameErr("payload must be a JSON object")
	default:
		m.Payload = pay
	}
	return &m, nil
}

// decodeRef accepts a string, a number (as its text) or null.
func decodeRef(raw json.RawMessage, field string) (*string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, frameErr("%s: %v", field, err)
		}
		return &s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
			return nil, frameErr("%s is not a number", field)
		}
		s := string(raw)
		return &s, nil
	}
	return nil, frameErr("%s must be a string or null", field)
}

func decodeName(raw json.RawMessage, field string) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", frameErr("missing %s", field)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", frameErr("%s must be a string", field)
	}
	if s == "" {
		return "", frameErr("%s is empty", field)
	}
	return s, nil
}
