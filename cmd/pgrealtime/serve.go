package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// Shutdown budget: PROTOCOL section 1 says exit within 10 s of SIGTERM.
const (
	wsShutdownTimeout     = 4 * time.Second // close every socket with 1001
	readerShutdownTimeout = 4 * time.Second // final standby status to Postgres
)

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(cmdServe, "serve", args, getenv, stdout)
	if err != nil {
		return err
	}
	if err := checkDatabaseURL(cfg); err != nil {
		return err
	}
	if err := checkCluster(cfg); err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	return serve(ctx, cfg, log, serveOptions{})
}

// checkDatabaseURL requires --database-url and checks its syntax.
func checkDatabaseURL(cfg *Config) error {
	if cfg.DatabaseURL == "" {
		return configErr("--database-url", "required: set --database-url, PGREALTIME_DATABASE_URL or DATABASE_URL (e.g. postgres://user:password@host:5432/db)")
	}
	if _, err := pgconn.ParseConfig(cfg.DatabaseURL); err != nil {
		var pe *pgconn.ParseConfigError
		msg := err.Error()
		if errors.As(err, &pe) && pe.Unwrap() != nil {
			// The error quotes the URL, password included: don't print it.
			msg = pe.Unwrap().Error()
		}
		return configErr(cfg.Source("database-url"), "not a valid connection URL or DSN: %s", msg)
	}
	return nil
}

// serveOptions is what `dev` adds to a plain serve.
type serveOptions struct {
	// defaultRules is used when --config is not given (dev's demo rules).
	defaultRules     []byte
	defaultRulesName string
	// onListening runs once the HTTP listener is bound.
	onListening func(addr net.Addr)
}

// pipeline is the running system below cmd: WAL reader → broker → wsapi.
type pipeline struct {
	// handler serves every HTTP endpoint of PROTOCOL section 1.
	handler http.Handler
	// run streams the WAL until ctx ends (nil or ctx error) or a
	// non-retryable failure.
	run func(ctx context.Context) error
	// stepDown, when set (cluster mode), hands the leadership over at
	// shutdown, before the WebSockets are closed.
	stepDown func()
	// shutdown closes every WebSocket with 1001.
	shutdown func(ctx context.Context) error
	// close releases the broker.
	close func() error
	// connections is the number of open WebSocket connections.
	connections func() int64
}

// serve loads rules and keys, builds the pipeline, listens, and runs until
// ctx is cancelled (clean shutdown, nil) or the reader fails (error).
func serve(ctx context.Context, cfg *Config, log zerolog.Logger, opt serveOptions) error {
	slog := log.With().Str("component", "serve").Logger()

	var rc *rules.Config
	switch {
	case cfg.ConfigFile != "":
		var err error
		if rc, err = loadRules(cfg.ConfigFile, cfg.Source("config")); err != nil {
			return err
		}
	case opt.defaultRules != nil:
		var err error
		if rc, err = decodeRules(opt.defaultRules, opt.defaultRulesName, "--config"); err != nil {
			return err
		}
	}
	set, verifier, err := compileAccess(cfg, rc, log)
	if err != nil {
		return err
	}
	defer verifier.Close()
	set.Log = log // rule evaluation errors, rate-limited by the rules package
	if rc == nil {
		slog.Warn().Str("admin_role", cfg.AdminRole).
			Msg("no --config rules file: deny by default, only tokens with the admin role may subscribe")
	}
	if n := len(cfg.JWTSecret); n > 0 && n < 32 {
		slog.Warn().Int("bytes", n).Msg("--jwt-secret is short: use at least 32 random bytes, anyone who guesses it can mint admin tokens")
	}
	if cfg.JWTSecret == "" && cfg.JWKSFile == "" && cfg.JWKSURL == "" {
		slog.Warn().Msg("none of --jwt-secret, --jwks-file, --jwks-url: every connection is anonymous")
	}
	if cfg.JWKSURL != "" {
		if n := verifier.RemoteKeys(); n > 0 {
			slog.Info().Str("jwks_url", cfg.JWKSURL).Int("keys", n).Msg("fetched the signing keys from --jwks-url")
		} else {
			slog.Error().Str("jwks_url", cfg.JWKSURL).Dur("retry_every", cfg.JWKSUnknownKID).
				Msg("no signing keys from --jwks-url yet: RS256/ES256 tokens are refused until a fetch succeeds; serving anyway and fetching again when a token arrives and every --jwks-refresh-interval")
		}
	}

	var p *pipeline
	if cfg.RedisURL != "" {
		p, err = buildClusterPipeline(ctx, cfg, set, verifier, log)
		if err != nil && ctx.Err() != nil {
			slog.Info().Msg("stopped while waiting for Redis")
			return nil
		}
	} else {
		p, err = buildPipeline(cfg, set, verifier, log)
	}
	if err != nil {
		return err
	}
	defer p.close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (--listen): %w", cfg.Listen, err)
	}
	slog.Info().Str("publication", cfg.Publication).Str("slot", cfg.Slot).Str("notify_channel", cfg.NotifyChannel).
		Str("rules", rulesSource(cfg, opt)).Bool("jwt_secret", cfg.JWTSecret != "").Str("jwks_file", cfg.JWKSFile).
		Str("jwks_url", cfg.JWKSURL).Strs("jwt_audience", cfg.JWTAudience).Str("jwt_issuer", cfg.JWTIssuer).
		Int("max_connections", cfg.MaxConnections).Int("max_subscriptions", cfg.MaxSubscriptions).
		Float64("subscribe_rate", cfg.SubscribeRate).Int64("max_message_bytes", cfg.MaxMessageBytes).
		Int("send_queue", cfg.SendQueue).Int("history_size", cfg.HistorySize).Strs("allowed_origins", cfg.AllowedOrigins).
		Msg("configuration")
	slog.Info().Str("addr", ln.Addr().String()).Str("version", version).Msg("listening")
	hs := &http.Server{
		Handler:           p.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// net/http's own messages (bad TLS, panics) as JSON log lines too.
		ErrorLog: stdlog.New(slog.With().Str("source", "net/http").Logger(), "", 0),
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- hs.Serve(ln) }()

	readerCtx, stopReader := context.WithCancel(context.Background())
	defer stopReader()
	if os.Getenv("GOGC") == "" && p.connections != nil {
		go tuneGC(readerCtx, p.connections)
	}
	readerErr := make(chan error, 1)
	go func() { readerErr <- p.run(readerCtx) }()

	if opt.onListening != nil {
		opt.onListening(ln.Addr())
	}

	var failure error
	readerDone := false
	select {
	case <-ctx.Done():
		slog.Info().Msg("shutting down: closing connections with 1001")
	case err := <-readerErr:
		readerDone = true
		if err == nil || errors.Is(err, context.Canceled) {
			err = errors.New("the WAL reader stopped unexpectedly")
		}
		failure = fmt.Errorf("wal reader: %w", err)
		slog.Error().Err(err).Msg("WAL reader failed; shutting down")
	case err := <-httpErr:
		failure = fmt.Errorf("http server: %w", err)
		slog.Error().Err(err).Msg("HTTP server failed; shutting down")
	}

	// A leader hands over first: another node takes the WAL over while
	// this one closes its sockets.
	if p.stepDown != nil {
		p.stepDown()
	}
	// Stop accepting: closes the listener. Hijacked WebSockets are not
	// tracked by net/http, so this returns once plain requests finish.
	httpDone := make(chan struct{})
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), wsShutdownTimeout)
		defer cancel()
		_ = hs.Shutdown(sctx)
		close(httpDone)
	}()
	wctx, cancel := context.WithTimeout(context.Background(), wsShutdownTimeout)
	if err := p.shutdown(wctx); err != nil {
		slog.Warn().Err(err).Msg("closing WebSockets")
	}
	cancel()
	<-httpDone

	// Stop the reader last: it sends its final acknowledgement.
	stopReader()
	if !readerDone {
		select {
		case err := <-readerErr:
			if err != nil && !errors.Is(err, context.Canceled) && failure == nil {
				slog.Warn().Err(err).Msg("WAL reader stopped with an error")
			}
		case <-time.After(readerShutdownTimeout):
			slog.Warn().Msg("WAL reader did not stop in time")
		}
	}
	if failure == nil {
		slog.Info().Msg("stopped")
	}
	return failure
}

// compileAccess compiles the rules and builds the token verifier (which,
// with --jwks-url, fetches the keys: close it when done): every problem is
// a configuration error naming the setting.
func compileAccess(cfg *Config, rc *rules.Config, log zerolog.Logger) (*rules.Set, *auth.Verifier, error) {
	set, err := rules.Compile(rc, cfg.AdminRole)
	if err != nil {
		if cfg.ConfigFile != "" {
			return nil, nil, configErr(cfg.Source("config"), "%s: %v", cfg.ConfigFile, err)
		}
		return nil, nil, configErr(cfg.Source("config"), "%v", err)
	}
	if cfg.JWKSURL != "" && cfg.JWKSFile != "" {
		return nil, nil, configErr(cfg.Source("jwks-url"), "cannot be combined with %s: give the keys either as a file or as a URL", cfg.Source("jwks-file"))
	}
	jwks, err := readJWKS(cfg)
	if err != nil {
		return nil, nil, err
	}
	v, err := auth.NewVerifier(auth.Config{
		HS256Secret: []byte(cfg.JWTSecret), JWKS: jwks,
		JWKSURL: cfg.JWKSURL, JWKSRefreshInterval: cfg.JWKSRefresh, JWKSUnknownKIDRefresh: cfg.JWKSUnknownKID,
		Audience: cfg.JWTAudience, Issuer: cfg.JWTIssuer, Logger: log,
	})
	if err != nil {
		if cfg.JWKSURL != "" {
			return nil, nil, configErr(cfg.Source("jwks-url"), "%v", err)
		}
		setting := cfg.Source("jwt-secret")
		if len(jwks) > 0 {
			setting = cfg.Source("jwks-file")
		}
		return nil, nil, configErr(setting, "%v", err)
	}
	return set, v, nil
}

func rulesSource(cfg *Config, opt serveOptions) string {
	switch {
	case cfg.ConfigFile != "":
		return cfg.ConfigFile
	case opt.defaultRules != nil:
		return opt.defaultRulesName
	}
	return "none (admin role only)"
}
