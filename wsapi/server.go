package wsapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// Defaults for Config fields left zero (PROTOCOL section 1).
const (
	DefaultAdminRole        = "admin"
	DefaultMaxConnections   = 10000
	DefaultMaxSubscriptions = 100
	DefaultSubscribeRate    = 10.0
	DefaultMaxMessageBytes  = 65536
	DefaultSendQueue        = 1024
	// DefaultBehindTimeout is how long a connection may stay more than
	// SendQueue messages behind before it is a slow consumer (4008).
	DefaultBehindTimeout = time.Second
	DefaultPingInterval  = 30 * time.Second
	// DefaultWriteTimeout bounds one socket write; a client that does not
	// take a message for this long is a slow consumer (4008).
	DefaultWriteTimeout = 10 * time.Second
	// SinceWait is how long a subscribe with a since ahead of the stream
	// waits for the stream to reach it (PROTOCOL section 7).
	SinceWait = 10 * time.Second
	// MaxBroadcastBytes is the largest POST /api/broadcast body.
	MaxBroadcastBytes = 1 << 20
)

// Close codes sent by the server (PROTOCOL section 3).
const (
	StatusGoingAway       = websocket.StatusGoingAway       // 1001 server shutting down
	StatusPolicyViolation = websocket.StatusPolicyViolation // 1008 repeated protocol abuse
	StatusMessageTooBig   = websocket.StatusMessageTooBig   // 1009 frame too large
	StatusTokenExpired    = websocket.StatusCode(4001)
	StatusSlowConsumer    = websocket.StatusCode(4008)
)

// Log keys.
const (
	logComponent = "component"
	logConnID    = "conn_id"
	logSubject   = "subject"
	logRole      = "role"
	logRemote    = "remote_addr"
	logTopic     = "topic"
	logCode      = "code"
)

// Config configures a Server. Zero fields take the Default… values.
type Config struct {
	// Broker is where connections subscribe and where HTTP and client
	// broadcasts are published (broker.Memory, or a cluster broker).
	Broker interface {
		broker.Subscriptions
		broker.LivePublisher
	}
	// Verifier checks tokens; nil: every connection is anonymous and any
	// presented token is refused.
	Verifier *auth.Verifier
	// Rules decides what each identity may read; nil: deny by default (only
	// the admin role reads).
	Rules            *rules.Set
	AdminRole        string
	MaxConnections   int
	MaxSubscriptions int
	// SubscribeRate is subscribe/unsubscribe requests per second per
	// connection (token bucket, burst = the same number).
	SubscribeRate   float64
	MaxMessageBytes int64
	// SendQueue is how many messages a connection may be behind (queued,
	// not yet written to its socket) for any length of time. A burst may
	// take it further, never past HardQueue(SendQueue); a connection
	// more than SendQueue messages behind whose socket is full and whose
	// messages have waited BehindTimeout is closed with 4008 (see the
	// package documentation).
	SendQueue int
	// BehindTimeout: see SendQueue.
	BehindTimeout time.Duration
	// AllowedOrigins: empty allows only the request's own host; "*" allows
	// every origin; otherwise full origins ("https://app.example.com") or
	// host patterns ("*.example.com", "app.example.com").
	AllowedOrigins []string
	// Ready reports readiness for /readyz (reader + postgres); nil: always
	// ready.
	Ready func() (bool, string)
	// Cluster, when set (cluster mode, --redis-url), serves GET /api/cluster
	// and adds the node's role and id to /readyz. Ready then also covers
	// Redis (connected, stream loaded and read).
	Cluster ClusterInfo
	// Inspector is served at GET / when set.
	Inspector http.Handler
	Logger    zerolog.Logger
	// PingInterval is how often a websocket ping checks the peer; a peer
	// that does not answer within the interval is dropped.
	PingInterval time.Duration
	// WriteTimeout bounds one socket write (slow consumer: 4008).
	WriteTimeout time.Duration
}

// Server serves the realtime endpoints. Create it with New.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	origins originPolicy
	mux     *http.ServeMux

	sinceWait time.Duration // SinceWait; shorter in tests
	hardQueue int           // HardQueue(cfg.SendQueue)
	// queueDepth, when set (tests), sees the depth of a send queue after
	// each push.
	queueDepth func(int)
	clock      clock // of the connections' ping and expiry timers; fake in tests
	writers    writePool

	count   atomic.Int64 // admitted connections, for MaxConnections
	closing atomic.Bool

	mu    sync.Mutex
	conns map[*conn]struct{}
	wg    sync.WaitGroup // one per admitted connection
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Broker == nil {
		return nil, errors.New("wsapi: Config.Broker is required")
	}
	if cfg.AdminRole == "" {
		cfg.AdminRole = DefaultAdminRole
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxSubscriptions <= 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.SubscribeRate <= 0 {
		cfg.SubscribeRate = DefaultSubscribeRate
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = DefaultSendQueue
	}
	if cfg.BehindTimeout <= 0 {
		cfg.BehindTimeout = DefaultBehindTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	op, err := parseOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With().Str(logComponent, "wsapi").Logger(),
		origins: op,
		conns:   make(map[*conn]struct{}),

		sinceWait: SinceWait,
		hardQueue: HardQueue(cfg.SendQueue),
		clock:     systemClock{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realtime", s.serveRealtime)
	mux.HandleFunc("GET "+SupabasePath, s.serveSupabase)
	mux.HandleFunc("POST "+SupabaseBroadcastPath, serveSupabaseREST)
	mux.HandleFunc("POST "+SupabaseBroadcastPath+"/", serveSupabaseREST)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /api/broadcast", s.serveBroadcast)
	mux.HandleFunc("GET /api/connections", s.serveConnections)
	mux.HandleFunc("GET /api/cluster", s.serveCluster)
	if cfg.Inspector != nil {
		mux.Handle("GET /", cfg.Inspector)
	}
	s.mux = mux
	return s, nil
}

// Connections is the number of open WebSocket connections.
func (s *Server) Connections() int64 { return s.count.Load() }

// Handler returns the HTTP handler of every endpoint.
func (s *Server) Handler() http.Handler { return s.mux }

// Shutdown refuses new upgrades (503), closes every socket with 1001
// "server shutting down" and waits until they are closed or ctx is done;
// then it drops the remaining sockets and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.closeWith(StatusGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.drop()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ready, reason := true, ""
	if s.cfg.Ready != nil {
		ready, reason = s.cfg.Ready()
	}
	if s.closing.Load() {
		ready, reason = false, "shutting down"
	}
	if ready {
		writeJSON(w, http.StatusOK, s.readyBody())
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, struct {
		Ready  bool   `json:"ready"`
		Reason string `json:"reason"`
	}{false, reason})
}

// httpError is the JSON body of every HTTP error.
type httpError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, httpError{Error: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal","message":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// tokenFrom returns the token of r: "Authorization: Bearer <jwt>", else the
// access_token query parameter ("" when neither is given).
func tokenFrom(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	return r.URL.Query().Get("access_token")
}

// verify checks a presented token (the verifier counts refusals in
// metrics). Without a configured verifier every token is refused.
func (s *Server) verify(token string) (*auth.Identity, error) {
	if !s.cfg.Verifier.Enabled() {
		metrics.TokensRejected.WithLabelValues("invalid").Inc()
		return nil, fmt.Errorf("%w: token authentication is not configured: set --jwt-secret, --jwks-file or --jwks-url", auth.ErrInvalidToken)
	}
	id, err := s.cfg.Verifier.Verify(token)
	if err != nil {
		if !errors.Is(err, auth.ErrInvalidToken) && !errors.Is(err, auth.ErrTokenExpired) {
			err = fmt.Errorf("%w: %v", auth.ErrInvalidToken, err)
		}
		return nil, err
	}
	if id == nil {
		return nil, fmt.Errorf("%w: verifier returned no identity", auth.ErrInvalidToken)
	}
	return id, nil
}

// tokenErrorCode maps a verify error to the protocol error code.
func tokenErrorCode(err error) string {
	if errors.Is(err, auth.ErrTokenExpired) {
		return "token_expired"
	}
	return "invalid_token"
}

func (s *Server) isAdmin(id *auth.Identity) bool {
	if s.cfg.Rules != nil {
		return s.cfg.Rules.IsAdmin(id)
	}
	return id != nil && !id.Anonymous && id.Role != "" && id.Role == s.cfg.AdminRole
}

// checkSubscribe applies the rules to a pattern ("*" is admin only).
func (s *Server) checkSubscribe(id *auth.Identity, p broker.Pattern) error {
	if p.All && !s.isAdmin(id) {
		return fmt.Errorf("%w: \"*\" is for the admin role only", rules.ErrForbidden)
	}
	if s.cfg.Rules == nil {
		if s.isAdmin(id) {
			return nil
		}
		return fmt.Errorf("%w: no rules are configured, only the admin role may subscribe", rules.ErrForbidden)
	}
	return s.cfg.Rules.CheckSubscribe(id, p)
}

// allow reports whether ev may be delivered to id.
func (s *Server) allow(id *auth.Identity, ev *broker.Event) bool {
	if s.cfg.Rules == nil {
		return s.isAdmin(id)
	}
	return s.cfg.Rules.Allow(id, ev)
}

func newConnID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
