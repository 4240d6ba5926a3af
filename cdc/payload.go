package cdc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/pgrealtime/pgrealtime/broker"
)

// CustomPayload is the JSON body of a custom event, as sent with NOTIFY,
// pgrealtime.broadcast or POST /api/broadcast (PROTOCOL section 5).
type CustomPayload struct {
	Collection string          `json:"collection"`
	Event      string          `json:"event"`
	RecordID   string          `json:"record_id,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

// ParseCustomPayload validates a custom-event payload: a JSON object with
// non-empty string "collection" and "event", an optional string
// "record_id" and optional "data" (any JSON; null counts as absent). The
// error says what is wrong.
func ParseCustomPayload(b []byte) (CustomPayload, error) {
	var raw struct {
		Collection json.RawMessage `json:"collection"`
		Event      json.RawMessage `json:"event"`
		RecordID   json.RawMessage `json:"record_id"`
		Data       json.RawMessage `json:"data"`
	}
	var p CustomPayload
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return p, errors.New("payload must be a JSON object")
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return p, errors.New("payload is not valid JSON: " + err.Error())
	}
	if err := requiredString(raw.Collection, "collection", &p.Collection); err != nil {
		return p, err
	}
	// The same rule as POST /api/broadcast: a collection no topic pattern
	// can name would be accepted and then never delivered.
	switch {
	case len(p.Collection) > broker.MaxPatternLen:
		return p, fmt.Errorf(`"collection" is longer than %d bytes`, broker.MaxPatternLen)
	case strings.ContainsAny(p.Collection, ".*?") || strings.IndexFunc(p.Collection, unicode.IsSpace) >= 0:
		return p, errors.New(`"collection" must not contain ".", "*", "?" or whitespace`)
	}
	if err := requiredString(raw.Event, "event", &p.Event); err != nil {
		return p, err
	}
	if len(raw.RecordID) > 0 && string(raw.RecordID) != "null" {
		if err := json.Unmarshal(raw.RecordID, &p.RecordID); err != nil {
			return p, errors.New(`"record_id" must be a string`)
		}
	}
	if len(raw.Data) > 0 && string(raw.Data) != "null" {
		p.Data = bytes.Clone(raw.Data)
	}
	return p, nil
}

func requiredString(raw json.RawMessage, name string, dst *string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return errors.New(`"` + name + `" is required`)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return errors.New(`"` + name + `" must be a string`)
	}
	if *dst == "" {
		return errors.New(`"` + name + `" must not be empty`)
	}
	return nil
}

// ToEvent returns the payload as a custom event with the given time (UTC)
// and position (zero for live-only events).
func (p CustomPayload) ToEvent(ts time.Time, pos broker.Position) *broker.Event {
	return &broker.Event{
		Kind:       broker.KindCustom,
		Collection: p.Collection,
		Name:       p.Event,
		RecordID:   p.RecordID,
		Data:       p.Data,
		Timestamp:  ts.UTC(),
		Position:   pos,
	}
}

var zeroPos broker.Position
