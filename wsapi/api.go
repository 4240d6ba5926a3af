package wsapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// serveRealtime upgrades GET /realtime to a WebSocket session.
func (s *Server) serveRealtime(w http.ResponseWriter, r *http.Request) {
	if !s.upgradable(w, r, "/realtime is a WebSocket endpoint: connect with a WebSocket client") {
		return
	}
	ident := auth.Anon()
	if tok := tokenFrom(r); tok != "" {
		id, err := s.verify(tok)
		if err != nil {
			writeError(w, http.StatusUnauthorized, tokenErrorCode(err), err.Error())
			return
		}
		ident = id
	}
	s.accept(w, r, ident, nil)
}

// upgradable answers a request that cannot be upgraded (shutting down, not
// a WebSocket upgrade, an Origin not allowed) and reports whether it can.
func (s *Server) upgradable(w http.ResponseWriter, r *http.Request, notWebSocket string) bool {
	if s.closing.Load() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down; reconnect shortly")
		return false
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "upgrade_required", notWebSocket)
		return false
	}
	if origin := r.Header.Get("Origin"); !s.origins.allowed(origin, r.Host) {
		writeError(w, http.StatusForbidden, "forbidden_origin", fmt.Sprintf("origin %q may not open a WebSocket here (see --allowed-origins)", origin))
		return false
	}
	return true
}

// accept upgrades an admitted request and runs its session; ph is the
// Phoenix session of a Supabase endpoint connection (nil for /realtime).
func (s *Server) accept(w http.ResponseWriter, r *http.Request, ident *auth.Identity, ph *phoenixConn) {
	if n := s.count.Add(1); n > int64(s.cfg.MaxConnections) {
		s.count.Add(-1)
		writeError(w, http.StatusServiceUnavailable, "too_many_connections", fmt.Sprintf("the server holds its maximum of %d connections", s.cfg.MaxConnections))
		return
	}
	crw := &corkRW{ResponseWriter: w, timeout: s.cfg.WriteTimeout}
	ws, err := websocket.Accept(crw, r, &websocket.AcceptOptions{InsecureSkipVerify: true}) // origin checked above
	if err != nil {
		s.count.Add(-1)
		s.log.Debug().Err(err).Str(logRemote, r.RemoteAddr).Msg("websocket upgrade failed")
		return
	}
	ws.SetReadLimit(s.cfg.MaxMessageBytes)
	c := s.newConn(ws, r.RemoteAddr, ident)
	if ph != nil {
		ph.c, c.ph = c, ph
	}
	c.cork = crw.cc
	c.cork.onTimeout = func() { c.slow("write timed out") } // the close frame follows what is buffered

	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		s.count.Add(-1)
		ws.Close(StatusGoingAway, "server shutting down")
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	c.start()
	// The session runs on its own goroutine and the handler returns, so
	// that net/http's per-request state (the request, its headers, the
	// response) is not kept for the life of the socket.
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			s.count.Add(-1)
			s.wg.Done()
		}()
		c.run()
	}()
}

// adminOnly authorizes the admin APIs: a Bearer token with the admin role;
// with no verifier configured, loopback callers only. It writes the error
// response and returns false when the caller is refused.
func (s *Server) adminOnly(w http.ResponseWriter, r *http.Request) bool {
	if !s.cfg.Verifier.Enabled() {
		if isLoopback(r.RemoteAddr) {
			return true
		}
		writeError(w, http.StatusForbidden, "forbidden", "no token verifier is configured: this endpoint only accepts requests from loopback addresses")
		return false
	}
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, ok := strings.Cut(strings.TrimSpace(h), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			tok = strings.TrimSpace(t)
		}
	}
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pgrealtime"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", `missing "Authorization: Bearer <jwt>" header with an admin token`)
		return false
	}
	id, err := s.verify(tok)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pgrealtime", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, tokenErrorCode(err), err.Error())
		return false
	}
	if !s.isAdmin(id) {
		writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("this endpoint needs the %q role", s.cfg.AdminRole))
		return false
	}
	return true
}

// headerHasToken reports whether a comma-separated header lists token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BroadcastRequest is the body of POST /api/broadcast (PROTOCOL section 5).
type BroadcastRequest struct {
	Collection string          `json:"collection"`
	Event      string          `json:"event"`
	RecordID   *string         `json:"record_id,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

// validate checks the body and says what is wrong.
func (b *BroadcastRequest) validate() error {
	switch {
	case b.Collection == "":
		return errors.New(`"collection" is required`)
	case len(b.Collection) > broker.MaxPatternLen:
		return fmt.Errorf(`"collection" is longer than %d bytes`, broker.MaxPatternLen)
	case strings.ContainsAny(b.Collection, ".*?") || strings.IndexFunc(b.Collection, unicode.IsSpace) >= 0:
		return errors.New(`"collection" must not contain ".", "*", "?" or whitespace`)
	case b.Event == "":
		return errors.New(`"event" is required`)
	case b.RecordID != nil && *b.RecordID == "":
		return errors.New(`"record_id" is empty: omit it for a collection-level event`)
	case b.RecordID != nil && len(*b.RecordID) > broker.MaxPatternLen:
		return fmt.Errorf(`"record_id" is longer than %d bytes`, broker.MaxPatternLen)
	}
	return nil
}

func (s *Server) serveBroadcast(w http.ResponseWriter, r *http.Request) {
	if !s.adminOnly(w, r) {
		return
	}
	bad := func(msg string) {
		metrics.BadPayloads.WithLabelValues("http").Inc()
		s.log.Info().Str(logRemote, r.RemoteAddr).Str("problem", msg).Msg("bad broadcast body")
		writeError(w, http.StatusBadRequest, "bad_request", msg)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBroadcastBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			bad(fmt.Sprintf("body is larger than %d bytes", MaxBroadcastBytes))
			return
		}
		bad("read body: " + err.Error())
		return
	}
	var req BroadcastRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			bad(fmt.Sprintf("field %q must be a %s", te.Field, te.Type))
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			bad(strings.TrimPrefix(err.Error(), "json: ") + ` (want "collection", "event", "record_id", "data")`)
		default:
			bad("body is not a JSON object: " + err.Error())
		}
		return
	}
	if dec.More() {
		bad("body has data after the JSON object")
		return
	}
	if err := req.validate(); err != nil {
		bad(err.Error())
		return
	}
	ev := &broker.Event{
		Kind:       broker.KindCustom,
		Collection: req.Collection,
		Name:       req.Event,
		Timestamp:  time.Now().UTC(),
	}
	if req.RecordID != nil {
		ev.RecordID = *req.RecordID
	}
	if len(req.Data) > 0 && string(req.Data) != "null" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, req.Data); err != nil {
			bad(`"data" is not valid JSON`)
			return
		}
		ev.Data = buf.Bytes()
	}
	metrics.EventsReceived.WithLabelValues("http").Inc()
	if err := s.cfg.Broker.PublishLive(r.Context(), ev); err != nil {
		s.log.Error().Err(err).Msg("publish broadcast")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not publish the event: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]bool{"accepted": true})
}

// connectionInfo is one entry of GET /api/connections.
type connectionInfo struct {
	ID            string         `json:"id"`
	Subject       string         `json:"subject"`
	Role          string         `json:"role"`
	Anonymous     bool           `json:"anonymous"`
	Claims        map[string]any `json:"claims"`
	Subscriptions []string       `json:"subscriptions"`
	ConnectedAt   time.Time      `json:"connected_at"`
	RemoteAddr    string         `json:"remote_addr"`
	Queued        int            `json:"queued"`
}

func (s *Server) serveConnections(w http.ResponseWriter, r *http.Request) {
	if !s.adminOnly(w, r) {
		return
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]connectionInfo, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.info())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].ConnectedAt.Equal(out[j].ConnectedAt) {
			return out[i].ConnectedAt.Before(out[j].ConnectedAt)
		}
		return out[i].ID < out[j].ID
	})
	writeJSON(w, http.StatusOK, out)
}
