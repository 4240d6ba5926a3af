package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// runToken mints an HS256 token signed with --jwt-secret: for trying the
// server (inspector, curl) and for app servers that call /api/broadcast.
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(cmdToken, "token", args, getenv, stdout)
	if err != nil {
		return err
	}
	if cfg.JWTSecret == "" {
		return configErr("--jwt-secret", "required: the token is signed with it (set --jwt-secret or PGREALTIME_JWT_SECRET)")
	}
	claims := map[string]any{"sub": cfg.Subject, "exp": time.Now().Add(cfg.TTL).Unix()}
	if cfg.Role != "" {
		claims["role"] = cfg.Role
	}
	tok, err := signToken(cfg.JWTSecret, claims)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
