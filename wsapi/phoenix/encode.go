package phoenix

import (
	"bytes"
	"encoding/json"
	"hash/fnv"
	"strconv"
)

// AppendMessage appends a server message in serializer v's form: 1.0.0
// {"event","join_ref","payload","ref","topic"}, 2.0.0 [join_ref, ref,
// topic, event, payload]. A nil ref is null; payload must be valid JSON.
func AppendMessage(b []byte, v Vsn, joinRef, ref *string, topic, event string, payload []byte) []byte {
	if v == V2 {
		b = append(b, '[')
		b = appendRef(b, joinRef)
		b = append(b, ',')
		b = appendRef(b, ref)
		b = append(b, ',')
		b = appendString(b, topic)
		b = append(b, ',')
		b = appendString(b, event)
		b = append(b, ',')
		b = append(b, payload...)
		return append(b, ']')
	}
	b = append(b, `{"event":`...)
	b = appendString(b, event)
	b = append(b, `,"join_ref":`...)
	b = appendRef(b, joinRef)
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	b = append(b, `,"ref":`...)
	b = appendRef(b, ref)
	b = append(b, `,"topic":`...)
	b = appendString(b, topic)
	return append(b, '}')
}

// Envelope returns what AppendMessage writes before and after a payload
// that starts with payloadPre and ends with payloadPost, so that a payload
// shared by many recipients is framed per recipient without being encoded
// again: frame = pre + shared + post.
func Envelope(v Vsn, joinRef *string, topic, event string, payloadPre, payloadPost []byte) (pre, post []byte) {
	// A raw NUL byte never appears in encoded JSON (strings escape it), so
	// it marks the payload's place.
	p := make([]byte, 0, len(payloadPre)+len(payloadPost)+1)
	p = append(append(append(p, payloadPre...), 0), payloadPost...)
	m := AppendMessage(nil, v, joinRef, nil, topic, event, p)
	i := bytes.IndexByte(m, 0)
	return m[:i:i], m[i+1:]
}

// Reply is the payload of a phx_reply: {"status":…,"response":…};
// response must be valid JSON (nil: {}).
func Reply(status string, response []byte) []byte {
	if response == nil {
		response = []byte("{}")
	}
	b := append([]byte(`{"status":`), strconv.Quote(status)...)
	b = append(b, `,"response":`...)
	b = append(b, response...)
	return append(b, '}')
}

// ErrorResponse is a reply response {"reason": msg}.
func ErrorResponse(msg string) []byte {
	return append(appendString([]byte(`{"reason":`), msg), '}')
}

// BindingID is the id of a postgres_changes binding: a hash of its
// parameters, as Supabase Realtime makes it, so that equal bindings have
// equal ids. It fits a JSON number exactly.
func BindingID(event, schema, table, filter string) uint32 {
	h := fnv.New32a()
	for _, s := range []string{event, schema, table, filter} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return h.Sum32() & 0x7FFFFFF
}

func appendRef(b []byte, ref *string) []byte {
	if ref == nil {
		return append(b, "null"...)
	}
	return appendString(b, *ref)
}

func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s)
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
