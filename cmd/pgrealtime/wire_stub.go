//go:build !wired

package main

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// Until cdc, broker and wsapi are merged, serve/dev/teardown report it.
var errNotMerged = errors.New("this build does not include the WAL reader, broker and WebSocket server yet")

func buildPipeline(cfg *Config, set *rules.Set, verifier *auth.Verifier, log zerolog.Logger) (*pipeline, error) {
	return nil, errNotMerged
}

func teardown(ctx context.Context, cfg *Config) error { return errNotMerged }

func loadDemo(ctx context.Context, url string) error { return errNotMerged }

func signToken(secret string, claims map[string]any) (string, error) { return "", errNotMerged }
