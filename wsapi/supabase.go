package wsapi

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
)

// The Supabase Realtime endpoint (PROTOCOL section 9): Phoenix channels
// over the same connection machinery as /realtime (send queue, write
// pool, limits, pings, token expiry, rules). The wire format lives in
// wsapi/phoenix; the session is this file, supabase_channel.go (joins),
// supabase_broadcast.go and supabase_deliver.go.
//
// A connection has one identity, as on /realtime: the last token verified
// on it (a join's access_token, an access_token event, else the apikey).
// supabase-js sends the same token to every channel.

// SupabasePath is the Supabase Realtime endpoint; SupabaseBroadcastPath
// is Supabase's REST broadcast, which pgrealtime answers with 501.
const (
	SupabasePath          = "/realtime/v1/websocket"
	SupabaseBroadcastPath = "/realtime/v1/api/broadcast"
)

// serveSupabaseREST answers realtime-js's REST broadcast (httpSend, and
// send() on a channel that is not joined) with a clear refusal.
func serveSupabaseREST(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, "rest_broadcast_not_supported",
		"pgrealtime does not implement Supabase's REST broadcast: send on a joined channel (channel.send), or POST /api/broadcast with an admin token")
}

// phoenixConn is the Phoenix session of one connection.
type phoenixConn struct {
	c      *conn
	vsn    phoenix.Vsn
	apikey string

	// channels is touched by the connection's reader goroutine and, at
	// the end, by its teardown (under mu).
	mu       sync.Mutex
	channels map[string]*channel
	closed   bool
}

// serveSupabase upgrades GET /realtime/v1/websocket. The apikey is not
// checked here: an unverifiable token is a join error (realtime-js would
// otherwise reconnect forever without saying why).
func (s *Server) serveSupabase(w http.ResponseWriter, r *http.Request) {
	if !s.upgradable(w, r, SupabasePath+" is a WebSocket endpoint: connect with a Supabase Realtime client") {
		return
	}
	vsn, err := phoenix.ParseVsn(r.URL.Query().Get("vsn"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	ph := &phoenixConn{vsn: vsn, apikey: r.URL.Query().Get("apikey"), channels: map[string]*channel{}}
	if ph.apikey == "" {
		ph.apikey = tokenFrom(r)
	}
	s.accept(w, r, auth.Anon(), ph)
}

// send queues a message.
func (p *phoenixConn) send(joinRef, ref *string, topic, event string, payload []byte) {
	p.c.enqueue(item{raw: p.msg(joinRef, ref, topic, event, payload)})
}

func (p *phoenixConn) msg(joinRef, ref *string, topic, event string, payload []byte) []byte {
	return phoenix.AppendMessage(nil, p.vsn, joinRef, ref, topic, event, payload)
}

// replyOK and replyError answer a push (a phx_reply with its ref).
func (p *phoenixConn) replyOK(m *phoenix.Message, response []byte) {
	p.send(m.JoinRef, m.Ref, m.Topic, phoenix.EventReply, phoenix.Reply("ok", response))
}

func (p *phoenixConn) replyError(m *phoenix.Message, reason string) {
	p.send(m.JoinRef, m.Ref, m.Topic, phoenix.EventReply, phoenix.Reply("error", phoenix.ErrorResponse(reason)))
}

// badFrame answers a frame that could not be decoded: an error reply on
// the phoenix topic (clients ignore it; a person reading the frames sees
// why), counted towards the 1008 abuse limit.
func (p *phoenixConn) badFrame(err error) {
	p.send(nil, nil, phoenix.TopicPhoenix, phoenix.EventReply, phoenix.Reply("error", phoenix.ErrorResponse(err.Error())))
	p.c.countAbuse()
}

// handle answers one client frame.
func (p *phoenixConn) handle(typ websocket.MessageType, data []byte) {
	var (
		m   *phoenix.Message
		err error
	)
	if typ == websocket.MessageBinary {
		if p.vsn != phoenix.V2 {
			err = fmt.Errorf("%w: binary frames need serializer 2.0.0 (vsn=2.0.0)", phoenix.ErrFrame)
		} else {
			m, err = phoenix.DecodeBinary(data)
		}
	} else {
		m, err = phoenix.Decode(p.vsn, data)
	}
	if err != nil {
		p.badFrame(err)
		return
	}
	if m.Topic == phoenix.TopicPhoenix {
		if m.Event == phoenix.EventHeartbeat {
			p.replyOK(m, nil)
			return
		}
		p.replyError(m, fmt.Sprintf("unknown event %q on topic phoenix (want heartbeat)", m.Event))
		return
	}
	if m.Event == phoenix.EventJoin {
		p.join(m)
		return
	}
	p.mu.Lock()
	ch := p.channels[m.Topic]
	p.mu.Unlock()
	if ch == nil {
		p.replyError(m, "unmatched topic: join "+m.Topic+" first")
		return
	}
	switch m.Event {
	case phoenix.EventLeave, phoenix.EventClose:
		p.leave(ch)
		p.replyOK(m, nil)
	case phoenix.EventAccessToken:
		p.accessToken(m)
	case phoenix.EventBroadcast:
		ch.broadcast(m)
	case phoenix.EventPresence:
		// Presence state is always empty (PROTOCOL section 9, README):
		// track/untrack are accepted and change nothing.
		p.replyOK(m, nil)
	default:
		p.replyError(m, fmt.Sprintf("unknown event %q (want phx_leave, access_token, broadcast or presence)", m.Event))
	}
}

// leave drops a channel and its subscriptions.
func (p *phoenixConn) leave(ch *channel) {
	p.mu.Lock()
	if p.channels[ch.topic] == ch {
		delete(p.channels, ch.topic)
	}
	p.mu.Unlock()
	ch.unsubscribe()
}

// closeAll drops every channel (connection teardown).
func (p *phoenixConn) closeAll() {
	p.mu.Lock()
	chs := make([]*channel, 0, len(p.channels))
	for _, ch := range p.channels {
		chs = append(chs, ch)
	}
	p.channels = map[string]*channel{}
	p.closed = true
	p.mu.Unlock()
	for _, ch := range chs {
		ch.unsubscribe()
	}
}

// topics lists the joined channels' topics (for /api/connections).
func (p *phoenixConn) topics() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.channels))
	for t := range p.channels {
		out = append(out, t)
	}
	return out
}

// subscriptions counts the broker subscriptions of every channel.
func (p *phoenixConn) subscriptions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, ch := range p.channels {
		n += ch.patterns()
	}
	return n
}

// accessToken swaps the connection's identity for a refreshed token's and
// closes the channels the new identity may no longer read.
func (p *phoenixConn) accessToken(m *phoenix.Message) {
	var body struct {
		AccessToken *string `json:"access_token"`
	}
	if err := decodePayload(m.Payload, &body); err != nil || body.AccessToken == nil || *body.AccessToken == "" {
		p.replyError(m, `access_token event needs a payload {"access_token": "<jwt>"}`)
		return
	}
	ident, err := p.c.s.verify(*body.AccessToken)
	if err != nil {
		p.replyError(m, "access_token refused: "+err.Error())
		p.systemError(m.Topic, "access_token refused: "+err.Error())
		return
	}
	p.c.ident.Store(ident)
	p.c.armExpiry()
	p.mu.Lock()
	chs := make([]*channel, 0, len(p.channels))
	for _, ch := range p.channels {
		chs = append(chs, ch)
	}
	p.mu.Unlock()
	for _, ch := range chs {
		if err := ch.recheck(ident); err != nil {
			p.leave(ch)
			p.systemError(ch.topic, err.Error())
			p.send(ch.joinRef, nil, ch.topic, phoenix.EventClose, []byte("{}"))
		}
	}
	p.replyOK(m, nil)
}

// systemError sends a system message with status error to a channel.
func (p *phoenixConn) systemError(topic, msg string) {
	p.send(nil, nil, topic, phoenix.EventSystem, systemPayload(subTopic(topic), "system", "error", msg))
}

func systemPayload(channel, extension, status, msg string) []byte {
	return mustJSON(struct {
		Message   string `json:"message"`
		Status    string `json:"status"`
		Extension string `json:"extension"`
		Channel   string `json:"channel"`
	}{msg, status, extension, channel})
}

// verifyJoinToken returns the identity of a join: its access_token, else
// the connection's apikey, else the connection's current identity.
func (p *phoenixConn) verifyJoinToken(tok string) (*auth.Identity, error) {
	if tok == "" {
		tok = p.apikey
	}
	if tok == "" {
		return p.c.ident.Load(), nil
	}
	return p.c.s.verify(tok)
}

// phoenixData is an event's shared Supabase payload: the data of a
// postgres_changes message, or the payload of a broadcast.
func phoenixData(ev *broker.Event) []byte {
	if ev.Kind == broker.KindCustom {
		return phoenix.BroadcastData(ev)
	}
	return phoenix.ChangeData(ev)
}

var supabaseBroadcasts = metrics.EventsReceived.WithLabelValues("supabase")
