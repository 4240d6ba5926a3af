package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/cdc"
	pgsql "github.com/pgrealtime/pgrealtime/sql"
	"github.com/pgrealtime/pgrealtime/wsapi"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/inspector"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// buildPipeline wires cdc → broker → wsapi. This is the only place that
// knows all three.
func buildPipeline(cfg *Config, set *rules.Set, verifier *auth.Verifier, log zerolog.Logger) (*pipeline, error) {
	b := broker.NewMemory(broker.Config{HistorySize: cfg.HistorySize, Prepare: set.Prepare, Logger: log})
	r, err := cdc.NewReader(cdc.Config{
		ConnString:     cfg.DatabaseURL,
		Publication:    cfg.Publication,
		Slot:           cfg.Slot,
		NotifyChannel:  cfg.NotifyChannel,
		Publisher:      b,
		Live:           b,
		Checkpoint:     b,
		Logger:         log,
		ResumeWALLimit: resumeWALLimit(cfg.ResumeWALMB),
		BatchWindow:    batchWindow(cfg.BatchWindow),
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("wal reader: %w", err)
	}
	sc := serverConfig(cfg, set, verifier, log)
	sc.Broker, sc.Ready = b, r.Ready
	s, err := wsapi.New(sc)
	if err != nil {
		b.Close()
		return nil, configErr("", "%v", err)
	}
	return &pipeline{handler: s.Handler(), run: r.Run, shutdown: s.Shutdown, close: b.Close, connections: s.Connections}, nil
}

// serverConfig is the WebSocket server's configuration from cfg, common to
// one node and cluster mode (which add the broker, readiness and cluster).
func serverConfig(cfg *Config, set *rules.Set, verifier *auth.Verifier, log zerolog.Logger) wsapi.Config {
	return wsapi.Config{
		Verifier:         verifier,
		Rules:            set,
		AdminRole:        cfg.AdminRole,
		MaxConnections:   cfg.MaxConnections,
		MaxSubscriptions: cfg.MaxSubscriptions,
		SubscribeRate:    cfg.SubscribeRate,
		MaxMessageBytes:  cfg.MaxMessageBytes,
		SendQueue:        cfg.SendQueue,
		AllowedOrigins:   cfg.AllowedOrigins,
		Inspector:        inspector.Handler(),
		Logger:           log,
	}
}

func teardown(ctx context.Context, cfg *Config) error {
	return cdc.Teardown(ctx, cfg.DatabaseURL, cfg.Publication, cfg.Slot)
}

// loadDemo applies sql/setup.sql and sql/demo.sql.
func loadDemo(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range []struct{ name, sql string }{{"sql/setup.sql", pgsql.Setup}, {"sql/demo.sql", pgsql.Demo}} {
		if _, err := conn.Exec(ctx, s.sql); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

func signToken(secret string, claims map[string]any) (string, error) {
	return auth.SignHS256([]byte(secret), claims)
}

// batchWindow converts --batch-window to cdc's setting (0: never pause).
func batchWindow(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// resumeWALLimit converts --resume-wal-mb to cdc's limit (0 MiB: never hold
// the slot back, which cdc spells as a negative limit).
func resumeWALLimit(mb int) int64 {
	if mb <= 0 {
		return -1
	}
	return int64(mb) << 20
}
