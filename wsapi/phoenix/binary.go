package phoenix

import (
	"bytes"
	"encoding/json"
)

// Binary frames of serializer 2.0.0. realtime-js sends a broadcast whose
// payload has an event name as a "user broadcast push":
//
//	kind=3, len(join_ref), len(ref), len(topic), len(event), len(meta), encoding,
//	join_ref, ref, topic, event, meta, payload
//
// (one byte each for the lengths; encoding 1 is a JSON payload, 0 raw bytes).
const (
	kindUserBroadcastPush = 3
	encodingBinary        = 0
	encodingJSON          = 1
)

// DecodeBinary parses a binary frame. The result is a broadcast message
// whose payload is {"type":"broadcast","event":…,"payload":…} plus the
// metadata keys, as the client would have sent it as JSON.
func DecodeBinary(data []byte) (*Message, error) {
	if len(data) < 7 {
		return nil, frameErr("binary frame of %d bytes is shorter than its 7-byte header", len(data))
	}
	if data[0] != kindUserBroadcastPush {
		return nil, frameErr("binary frame of kind %d: only user broadcast pushes (kind 3) are accepted", data[0])
	}
	lens := [5]int{int(data[1]), int(data[2]), int(data[3]), int(data[4]), int(data[5])}
	enc := data[6]
	rest := data[7:]
	var parts [5]string
	for i, n := range lens {
		if n > len(rest) {
			return nil, frameErr("binary frame is truncated (a header length runs past its end)")
		}
		parts[i] = string(rest[:n])
		rest = rest[n:]
	}
	joinRef, ref, topic, event, meta := parts[0], parts[1], parts[2], parts[3], parts[4]
	if topic == "" {
		return nil, frameErr("binary frame has an empty topic")
	}
	if event == "" {
		return nil, frameErr("binary broadcast has an empty event name")
	}
	var payload json.RawMessage
	switch enc {
	case encodingJSON:
		p := bytes.TrimSpace(rest)
		if len(p) == 0 {
			p = []byte("null")
		}
		if !json.Valid(p) {
			return nil, frameErr("binary broadcast's JSON payload is not valid JSON")
		}
		payload = p
	case encodingBinary:
		return nil, frameErr("binary broadcast payloads (ArrayBuffer) are not supported: send a JSON-serializable payload")
	default:
		return nil, frameErr("binary broadcast has unknown payload encoding %d", enc)
	}
	b := []byte(`{"type":"broadcast","event":`)
	b = appendString(b, event)
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	if meta != "" {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(meta), &m); err != nil {
			return nil, frameErr("binary broadcast metadata is not a JSON object")
		}
		for k, v := range m {
			if k == "type" || k == "event" || k == "payload" {
				continue
			}
			b = append(b, ',')
			b = appendString(b, k)
			b = append(b, ':')
			b = append(b, v...)
		}
	}
	b = append(b, '}')
	msg := &Message{Topic: topic, Event: EventBroadcast, Payload: b}
	if joinRef != "" {
		msg.JoinRef = &joinRef
	}
	if ref != "" {
		msg.Ref = &ref
	}
	return msg, nil
}

// EncodeBinaryPush builds a user broadcast push frame as realtime-js does
// (for tests and Go clients).
func EncodeBinaryPush(joinRef, ref, topic, event string, jsonPayload []byte) []byte {
	b := []byte{kindUserBroadcastPush, byte(len(joinRef)), byte(len(ref)), byte(len(topic)), byte(len(event)), 0, encodingJSON}
	b = append(b, joinRef...)
	b = append(b, ref...)
	b = append(b, topic...)
	b = append(b, event...)
	return append(b, jsonPayload...)
}
